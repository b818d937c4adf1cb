"""Pending holes: what the sequence state holds that the gap table does not show yet."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from k2.state.base import PartitionToken
from k2.state.embedded import EmbeddedSequenceStore
from k2.state.pending import PENDING_SCHEMA, pending_holes
from k2.state.tracker import SequenceTracker
from tests.unit.state.streams import D0, T0, stream_batch


def test_pending_lists_every_young_hole_from_the_partition_index(tmp_path: Path) -> None:
    rows = [("ASX", "BHP", D0, 1), ("ASX", "BHP", D0, 4), ("ASX", "CBA", D0, 1), ("ASX", "CBA", D0, 2)]
    batch = stream_batch(rows)
    tracker = SequenceTracker("trades", reorder_window=64, reorder_timeout=5.0)
    result = tracker.classify(batch, {}, {})
    with EmbeddedSequenceStore(tmp_path) as store:
        assert pending_holes(store, ["trades"], 4).is_empty()
        store.commit(result.states, [PartitionToken("k2.trades", 0, None, 4)], result.clocks)
        got = pending_holes(store, ["trades", "quotes"], 4)
    assert got.schema == pl.Schema(PENDING_SCHEMA)
    assert got.select("symbol", "first_missing", "last_missing", "size", "status").rows() == [
        ("BHP", 2, 3, 2, "pending")
    ]
    assert got["detected_at"][0] == datetime.fromtimestamp((T0 + 1000) / 1e6, tz=UTC)
