"""Snapshot thinning: a dense window, tagged checkpoints beyond it, time travel to them."""

from __future__ import annotations

import time

from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.table import Table

from k2.config import LakeSettings
from k2.lake.offsets import snapshot_offsets, table_offsets
from k2.lake.retention import checkpoints, retain
from k2.lake.writer import NO_OFFSET, TableWriter
from tests.unit.lake.conftest import rows

T = "k2.trades"


class _Feed:
    def __init__(self, catalog: SqlCatalog) -> None:
        self.writer = TableWriter(catalog, "k2.ticks")
        self.offset = NO_OFFSET

    def commit(self, n: int = 3) -> int:
        start = max(self.offset, 0)
        sid = self.writer.commit(rows(start, n), {(T, 0): self.offset}, {(T, 0): start + n})
        self.offset = start + n
        return sid


def _lake(**kw: float) -> LakeSettings:
    return LakeSettings(**{"keep_snapshots": 1, "dense_minutes": 0, "checkpoint_minutes": 0.002, **kw})


def test_expiry_keeps_tagged_checkpoints_and_time_travel_reads_them(
    catalog: SqlCatalog, table: Table
) -> None:
    feed = _Feed(catalog)
    for _ in range(3):
        feed.commit()
    first = retain(table, _lake())
    assert first.tagged == 1 and first.expired == 2  # the two before the first checkpoint
    checkpoint = table.refresh().current_snapshot()
    assert checkpoint is not None
    # > checkpoint_minutes (120 ms) between the checkpoint's commit and the new head's: the step is
    # measured on commit times, so the pause must come before the commits (4 quick commits alone
    # can take less than a step on a fast machine, and then nothing is due)
    time.sleep(0.2)
    for _ in range(4):
        feed.commit()
    result = retain(table, _lake())
    table = table.refresh()

    kept = {s.snapshot_id for s in table.snapshots()}
    assert result.tagged == 1 and result.expired == 3
    assert kept == set(checkpoints(table).values())
    assert checkpoint.snapshot_id in kept
    assert table_offsets(table) == {(T, 0): 21}

    # "as of" a moment between the checkpoint and the next commit reads the checkpoint, exactly
    snap = table.snapshot_as_of_timestamp(checkpoint.timestamp_ms + 5)
    assert snap is not None and snap.snapshot_id == checkpoint.snapshot_id
    assert table.scan(snapshot_id=snap.snapshot_id).to_arrow().num_rows == 9
    assert snapshot_offsets(table, snap) == {(T, 0): 9}
    # before the oldest checkpoint: nothing kept (the reader reports it as expired)
    assert table.snapshot_as_of_timestamp(checkpoint.timestamp_ms - 1) is None


def test_dense_window_keeps_every_recent_snapshot(catalog: SqlCatalog, table: Table) -> None:
    feed = _Feed(catalog)
    ids = [feed.commit() for _ in range(5)]
    result = retain(table, _lake(dense_minutes=10))
    assert result.expired == 0
    assert {s.snapshot_id for s in table.refresh().snapshots()} == set(ids)


def test_checkpoints_thin_with_age_and_end_at_the_window(catalog: SqlCatalog, table: Table) -> None:
    feed = _Feed(catalog)
    feed.commit()
    lake = _lake(time_travel_hours=2, coarse_after_hours=1, coarse_checkpoint_minutes=60)
    retain(table, lake)
    for _ in range(3):
        time.sleep(0.15)
        feed.commit()
        retain(table, lake)
    tags = checkpoints(table.refresh())
    assert len(tags) == 4
    hour = 3_600_000
    # seen 90 minutes later: older than coarse_after, all in one hour bucket -> the first stays
    later = retain(table, lake, now_ms=int(time.time() * 1000) + 90 * 60_000)
    left = len(checkpoints(table.refresh()))
    assert left in (1, 2) and later.untagged == 4 - left  # 2: the four straddled an hour boundary
    # past the window: every old checkpoint goes; only the head remains (tagged afresh when due)
    retain(table, lake, now_ms=int(time.time() * 1000) + 3 * hour)
    table = table.refresh()
    head = table.current_snapshot()
    assert head is not None and set(checkpoints(table).values()) <= {head.snapshot_id}
    assert len(table.snapshots()) == 1 and table_offsets(table) == {(T, 0): 12}
