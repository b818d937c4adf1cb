"""The planning cache: per-snapshot file lists equal pyiceberg's plan_files, however they were derived."""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.table import Table

from k2.lake.maintenance import compact
from k2.observability.metrics import sample
from k2.query.files import FileSet, Layout, Prune, bucket_of
from k2.query.planner import SnapshotPlanner, TableSource
from tests.unit.query.lakedata import append_commits, asx_frames, lineage, new_catalog

DAY = (date(2014, 3, 11),)


def planned(table: Table, snapshot_id: int) -> set[str]:
    return {t.file.file_path for t in table.scan(snapshot_id=snapshot_id).plan_files()}


def incremental_count() -> float:
    return sample("k2_query_plans_total", {"table": "trades", "how": "incremental"})


def test_cache_equals_plan_files_after_many_small_appends(tmp_path: Path) -> None:
    _catalog, tables = new_catalog(tmp_path)
    trades = asx_frames(DAY)["trades"].head(3_000)
    planner = SnapshotPlanner("trades")
    table = tables["trades"]
    before = incremental_count()
    ids = []
    for i in range(30):  # more than commit.manifest.min-count-to-merge: merged manifests included
        table.append(lineage(trades.slice(i * 100, 100), table, i * 100))
        snap = table.current_snapshot()
        assert snap is not None
        ids.append(snap.snapshot_id)
        files = planner.files(table, snap)  # derived from the previous snapshot's list
        assert files.path_set() == planned(table, snap.snapshot_id)
        assert files.rows == (i + 1) * 100
    assert incremental_count() - before == 30
    # Older snapshots (time travel) are still exact, from the cache or a fresh derivation.
    cold = SnapshotPlanner("trades", cache_size=4)
    for sid in (ids[0], ids[12], ids[-1]):
        snap = table.snapshot_by_id(sid)
        assert cold.files(table, snap).path_set() == planned(table, sid)


def test_overwrite_falls_back_to_full_plan_then_appends_resume(tmp_path: Path) -> None:
    _catalog, tables = new_catalog(tmp_path)
    table = tables["trades"]
    frame = asx_frames(DAY)["trades"]
    append_commits(table, frame.head(2_000), 8)
    planner = SnapshotPlanner("trades")
    table = table.refresh()
    assert planner.files(table, table.current_snapshot()).path_set() == planned(
        table, table.current_snapshot().snapshot_id
    )
    result = compact(table)
    assert result.files_after < result.files_before
    table = table.refresh()
    full_before = sample("k2_query_plans_total", {"table": "trades", "how": "full"})
    snap = table.current_snapshot()
    assert planner.files(table, snap).path_set() == planned(table, snap.snapshot_id)
    assert sample("k2_query_plans_total", {"table": "trades", "how": "full"}) == full_before + 1
    table.append(lineage(frame.slice(2_000, 500), table, 2_000))
    snap = table.current_snapshot()
    inc = incremental_count()
    files = planner.files(table, snap)
    assert files.path_set() == planned(table, snap.snapshot_id)
    assert incremental_count() == inc + 1
    assert files.rows == 2_500


def test_pruning_keeps_every_file_with_matching_rows(tmp_path: Path) -> None:
    _catalog, tables = new_catalog(tmp_path)
    table = tables["trades"]
    frame = asx_frames((date(2014, 3, 11), date(2014, 3, 12)))["trades"]
    append_commits(table, frame, 12)
    snap = table.current_snapshot()
    files = SnapshotPlanner("trades").files(table, snap)
    bhp = frame.filter(frame["symbol"] == "BHP")
    t0 = int(bhp["exchange_ts"].dt.epoch("us")[5000])
    t1 = t0 + 15 * 60 * 1_000_000
    chosen = files.select(Prune(("BHP",), t0, t1))
    assert 0 < len(chosen) < len(files)
    # Every file that really holds a BHP row in the window was kept.
    needed = set()
    for path in files.paths.tolist():
        data = pq.read_table(path.removeprefix("file://"), columns=["symbol", "exchange_ts"])
        us = pc.cast(data["exchange_ts"], "int64")
        hit = pc.and_(pc.equal(data["symbol"], "BHP"), pc.and_(pc.greater_equal(us, t0), pc.less(us, t1)))
        if pc.any(hit).as_py():
            needed.add(path)
    assert needed and needed <= chosen.path_set()


def test_bucket_of_matches_the_writer(tmp_path: Path) -> None:
    _catalog, tables = new_catalog(tmp_path)
    table = tables["trades"]
    append_commits(table, asx_frames(DAY)["trades"], 1)
    layout = Layout.of(table.schema(), table.specs())
    for task in table.scan().plan_files():
        files = FileSet.build(1, [task.file], layout)
        data = pq.read_table(task.file.file_path.removeprefix("file://"), columns=["symbol"])
        data_symbols = set(data["symbol"].to_pylist())
        for symbol in data_symbols:
            assert bucket_of(symbol, 8) == int(files.bucket[0])


def test_table_source_refreshes_in_background(tmp_path: Path) -> None:
    catalog, tables = new_catalog(tmp_path)
    source = TableSource(catalog, "k2", "trades", refresh_interval_s=0.05)
    first = source.table()
    assert first.current_snapshot() is None
    tables["trades"].append(lineage(asx_frames(DAY)["trades"].head(10), tables["trades"]))
    deadline = time.monotonic() + 5
    while source.table().current_snapshot() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert source.table().current_snapshot() is not None
    assert (
        np.int64(source.table().current_snapshot().snapshot_id)
        == tables["trades"].current_snapshot().snapshot_id
    )


def test_a_watched_table_is_reloaded_by_its_watcher_only(tmp_path: Path) -> None:
    """While a watcher stages and publishes, a query reloads nothing: it would publish one table
    while the watcher prefetches the other (the first queries of a snapshot then shared the CPU)."""
    catalog, tables = new_catalog(tmp_path)
    source = TableSource(catalog, "k2", "trades", refresh_interval_s=0.05)
    source.table()
    source.watch(60.0)
    tables["trades"].append(lineage(asx_frames(DAY)["trades"].head(10), tables["trades"]))
    head = tables["trades"].current_snapshot()
    assert head is not None
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:  # ten intervals: a query would have reloaded by now
        assert source.table().current_snapshot() is None
        time.sleep(0.02)
    staged = source.stage()
    assert staged.current_snapshot() is not None and source.table().current_snapshot() is None
    source.publish(staged)
    published = source.table().current_snapshot()
    assert published is not None and published.snapshot_id == head.snapshot_id

    source.watch(None)  # no watcher: queries reload a stale table again
    tables["trades"].append(lineage(asx_frames(DAY)["trades"].slice(10, 10), tables["trades"], 10))
    newer = tables["trades"].current_snapshot()
    assert newer is not None
    deadline = time.monotonic() + 5
    while source.table().current_snapshot().snapshot_id != newer.snapshot_id:  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "a stale table was not reloaded"
        time.sleep(0.02)


def test_a_stalled_watcher_lets_queries_reload(tmp_path: Path) -> None:
    catalog, tables = new_catalog(tmp_path)
    source = TableSource(catalog, "k2", "trades", refresh_interval_s=0.05)
    source.table()
    source.watch(0.2)  # the watcher is this far behind: queries take over
    tables["trades"].append(lineage(asx_frames(DAY)["trades"].head(10), tables["trades"]))
    deadline = time.monotonic() + 5
    while source.table().current_snapshot() is None:
        assert time.monotonic() < deadline, "queries did not reload behind a stalled watcher"
        time.sleep(0.02)
