"""Scheduled maintenance: fewer files and snapshots, the same rows, gauges set."""

from __future__ import annotations

import time

from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.table import Table

from k2.config import LakeSettings
from k2.lake.offsets import table_offsets
from k2.lake.writer import NO_OFFSET, TableWriter
from k2.observability.metrics import sample
from k2.pipeline.upkeep import Upkeep
from tests.unit.lake.conftest import catalog, rows, table  # noqa: F401 - fixtures

T = "k2.trades"


def test_a_pass_compacts_expires_and_keeps_rows(catalog: SqlCatalog, table: Table) -> None:  # noqa: F811
    writer = TableWriter(catalog, "k2.ticks")
    start = NO_OFFSET
    for i in range(15):
        writer.commit(rows(i * 10, 10), {(T, 0): start}, {(T, 0): (i + 1) * 10})
        start = (i + 1) * 10
    before = table.refresh().scan().to_arrow().sort_by("kafka_offset")
    files_before = len(list(table.refresh().scan().plan_files()))

    upkeep = Upkeep(
        LakeSettings(maintain_every_s=0.001, time_travel_hours=0, keep_snapshots=2, dense_minutes=0), [table]
    )
    time.sleep(0.01)
    assert upkeep.due()
    upkeep.run()

    table = table.refresh()
    assert table.scan().to_arrow().sort_by("kafka_offset").equals(before)
    assert len(list(table.scan().plan_files())) < files_before
    assert len(table.snapshots()) <= 4  # kept 2, plus the compaction and manifest commits
    assert table_offsets(table) == {(T, 0): 150}
    assert sample("k2_lake_data_files", {"table": "ticks"}) == len(list(table.scan().plan_files()))


def test_never_due_without_a_schedule(table: Table) -> None:  # noqa: F811
    assert not Upkeep(LakeSettings(maintain_every_s=None), [table]).due()
    off = Upkeep(LakeSettings(maintain_every_s=0), [table])
    off._last -= 3600
    assert not off.due()


def test_on_by_default(table: Table) -> None:  # noqa: F811
    upkeep = Upkeep(LakeSettings(), [table])
    assert upkeep.every_s == 60.0
    upkeep._last -= 61
    assert upkeep.due()


def test_a_pass_brings_old_tables_properties_up_to_date(catalog: SqlCatalog, table: Table) -> None:  # noqa: F811
    with table.transaction() as txn:
        txn.remove_properties("write.metadata.delete-after-commit.enabled")
    Upkeep(LakeSettings(metadata_versions_kept=5, row_group_rows=4096), [table]).run()
    props = table.refresh().properties
    assert props["write.metadata.delete-after-commit.enabled"] == "true"
    assert props["write.metadata.previous-versions-max"] == "5"
    assert props["write.parquet.row-group-limit"] == "4096"
