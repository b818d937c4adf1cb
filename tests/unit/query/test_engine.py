"""Time travel and snapshot listing: earlier states stay readable after later appends."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from k2.lake.offsets import OFFSETS_KEY, encode_offsets
from k2.query.engine import QueryEngine
from k2.query.errors import InvalidParameterError, SnapshotNotFoundError
from k2.query.params import TimeRange, TimeTravel
from tests.unit.query.lakedata import asx_frames, lineage, new_catalog

DAY = (date(2014, 3, 12),)
SYMBOLS = ("BHP", "RIO", "DVN", "MWR")
WINDOW = TimeRange(datetime(2014, 3, 11, 13, 0, tzinfo=UTC), datetime(2014, 3, 12, 13, 0, tzinfo=UTC))


def count(engine: QueryEngine, travel: TimeTravel = TimeTravel()) -> int:
    bars = engine.bars(SYMBOLS, WINDOW, 86_400_000_000, travel=travel).table
    return int(sum(bars.column("trades").to_pylist()))


def test_time_travel_returns_the_earlier_state(tmp_path: Path) -> None:
    catalog, tables = new_catalog(tmp_path)
    trades = asx_frames(DAY)["trades"]
    half = trades.height // 2
    table = tables["trades"]
    table.append(
        lineage(trades.head(half), table),
        snapshot_properties={OFFSETS_KEY: encode_offsets({("k2.trades", 0): half})},
    )
    early = table.current_snapshot()
    assert early is not None
    time.sleep(0.02)
    between = datetime.now(UTC)
    time.sleep(0.02)
    table.append(
        lineage(trades.slice(half), table, half),
        snapshot_properties={OFFSETS_KEY: encode_offsets({("k2.trades", 0): trades.height})},
    )
    engine = QueryEngine(catalog, "k2", refresh_interval_s=0)
    assert count(engine) == trades.height
    assert count(engine, TimeTravel(snapshot_id=early.snapshot_id)) == half
    assert count(engine, TimeTravel(as_of=between)) == half
    assert count(engine, TimeTravel(as_of=between - timedelta(days=1))) == 0  # before the first commit
    page = engine.ticks(
        "trades", SYMBOLS, WINDOW, limit=100_000, travel=TimeTravel(snapshot_id=early.snapshot_id)
    )
    assert page.table.num_rows == half
    assert page.snapshots == {"trades": early.snapshot_id}
    listed = engine.snapshots("trades").table.to_pylist()
    assert [s["added_rows"] for s in listed] == [trades.height - half, half]
    assert listed[0]["parent_id"] == early.snapshot_id
    assert listed[1]["offsets"] == [{"topic": "k2.trades", "partition": 0, "offset": half}]
    assert listed[0]["total_rows"] == trades.height


def test_unknown_snapshot_is_404(engine: QueryEngine) -> None:
    with pytest.raises(SnapshotNotFoundError, match="has no snapshot 42") as info:
        engine.bars(("BHP",), WINDOW, 60_000_000, travel=TimeTravel(snapshot_id=42))
    assert info.value.status_code == 404


def test_snapshot_id_and_as_of_together_is_an_error() -> None:
    with pytest.raises(InvalidParameterError, match="either snapshot_id or as_of"):
        TimeTravel.parse(1, "2014-03-11T00:00:00Z")


def test_trades_snapshot_reads_quotes_as_of_its_commit(tmp_path: Path) -> None:
    catalog, tables = new_catalog(tmp_path)
    frames = asx_frames(DAY)
    tables["quotes"].append(lineage(frames["quotes"].head(1000), tables["quotes"]))
    tables["trades"].append(lineage(frames["trades"], tables["trades"]))
    snap = tables["trades"].current_snapshot()
    time.sleep(0.02)
    tables["quotes"].append(lineage(frames["quotes"].slice(1000), tables["quotes"], 1000))
    engine = QueryEngine(catalog, "k2", refresh_interval_s=0)
    now = engine.trades_with_quotes(("BHP",), WINDOW, 300_000_000)
    then = engine.trades_with_quotes(
        ("BHP",), WINDOW, 300_000_000, travel=TimeTravel(snapshot_id=snap.snapshot_id)
    )
    assert now.table.num_rows == then.table.num_rows
    assert then.snapshots["quotes"] != now.snapshots["quotes"]
    assert then.table.column("bid_price").null_count > now.table.column("bid_price").null_count


def test_snapshots_rejects_unknown_table(engine: QueryEngine) -> None:
    with pytest.raises(InvalidParameterError, match="not a table"):
        engine.snapshots("trades; DROP TABLE x")
