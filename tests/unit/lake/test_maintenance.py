"""Maintenance leaves query results unchanged and keeps the pipeline's offsets."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.table import Table

from k2.lake import maintenance as mx
from k2.lake.offsets import table_offsets
from k2.lake.writer import NO_OFFSET, TableWriter
from tests.unit.lake.conftest import rows

T = "k2.trades"


def _ingest(catalog: SqlCatalog, commits: int, per: int = 20) -> TableWriter:
    writer = TableWriter(catalog, "k2.ticks")
    start = NO_OFFSET
    for i in range(commits):
        writer.commit(rows(i * per, per), {(T, 0): start}, {(T, 0): (i + 1) * per})
        start = (i + 1) * per
    return writer


def _sorted(t: pa.Table) -> pa.Table:
    return t.sort_by([("kafka_offset", "ascending")])


def test_compact_keeps_rows_and_offsets(catalog: SqlCatalog, table: Table) -> None:
    _ingest(catalog, 12)
    before = _sorted(table.refresh().scan().to_arrow())
    files_before = len(list(table.refresh().scan().plan_files()))
    result = mx.compact(table)
    table = table.refresh()
    after = _sorted(table.scan().to_arrow())
    assert after.equals(before)
    assert result.files_before == files_before and result.files_after < files_before
    assert len(list(table.scan().plan_files())) < files_before
    assert table_offsets(table) == {(T, 0): 240}
    # the pipeline can go on appending after a compaction
    TableWriter(catalog, "k2.ticks").commit(rows(240, 5), {(T, 0): 240}, {(T, 0): 245})
    assert table.refresh().scan().to_arrow().num_rows == 245


def test_expire_keeps_current_and_offsets(catalog: SqlCatalog, table: Table) -> None:
    _ingest(catalog, 8)
    before = _sorted(table.refresh().scan().to_arrow())
    expired = mx.expire_snapshots(table, older_than=timedelta(0), keep_last=2)
    table = table.refresh()
    assert expired == 6 and len(table.snapshots()) == 2
    assert _sorted(table.scan().to_arrow()).equals(before)
    assert table_offsets(table) == {(T, 0): 160}


def test_orphans_removed_only_when_unreferenced_and_old(catalog: SqlCatalog, table: Table) -> None:
    _ingest(catalog, 6)
    mx.compact(table)
    mx.expire_snapshots(table, older_than=timedelta(0), keep_last=1)
    before = _sorted(table.refresh().scan().to_arrow())
    young = mx.remove_orphan_files(table, older_than=timedelta(hours=1), dry_run=True)
    assert young == []  # everything was written just now
    stray = table.location().removeprefix("file://") + "/data/stray.parquet"
    Path(stray).write_bytes(b"x")
    old = time.time() - 7200
    os.utime(stray, (old, old))
    removed = mx.remove_orphan_files(table, older_than=timedelta(hours=1))
    assert f"file://{stray}" in removed and not os.path.exists(stray)  # canonical locations
    orphans = mx.remove_orphan_files(table, older_than=timedelta(0))
    assert all("/data/" in p or "/metadata/" in p for p in orphans)
    assert _sorted(table.refresh().scan().to_arrow()).equals(before)


def test_rewrite_manifests_keeps_rows(catalog: SqlCatalog, table: Table) -> None:
    _ingest(catalog, 10)
    before = _sorted(table.refresh().scan().to_arrow())
    n_before, n_after = mx.rewrite_manifests(table)
    assert n_before >= 5 and n_after < n_before
    table = table.refresh()
    assert _sorted(table.scan().to_arrow()).equals(before)
    assert table_offsets(table) == {(T, 0): 200}
