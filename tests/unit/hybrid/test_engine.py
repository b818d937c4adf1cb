from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from k2.hybrid import HybridEngine
from k2.query.errors import InvalidParameterError
from k2.query.params import TimeRange
from k2.schemas import encode_batch
from tests.unit.hybrid.conftest import T0, FakeSource, Stream, ticks

ALL = TimeRange(datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
SYMBOLS = ["BHP", "RIO", "CBA", "NAB"]


def _feed(stream: Stream, first: int, count: int, kind: str = "trades") -> pl.DataFrame:
    """``count`` ticks round-robin over SYMBOLS, tick i at T0 + i s with sequence i // 4 + 1."""
    idx = list(range(first, first + count))
    frame = ticks(
        kind, [SYMBOLS[i % 4] for i in idx], [i // 4 + 1 for i in idx], seconds=[float(i) for i in idx]
    )
    return stream.produce(kind, frame)


def _check(stream: Stream, hybrid: HybridEngine, symbols: tuple[str, ...], kind: str = "trades") -> None:
    result = hybrid.ticks(kind, symbols, ALL)  # type: ignore[arg-type]
    ids = result.rows["message_id"].to_list()
    assert len(ids) == len(set(ids)), "a tick appears twice"
    covered = {p: end for (t, p), end in result.covered.items() if t == stream.topic(kind)}
    assert set(ids) == stream.expected(kind, symbols, covered)
    assert all(
        end >= part.high_watermark
        for end, part in zip(result.covered.values(), result.tail.parts.values(), strict=True)
    )
    assert result.rows["exchange_ts"].is_sorted()
    assert result.history_rows + result.tail_rows == result.rows.height
    assert result.rows.filter(~pl.col("committed")).height == result.tail_rows


@pytest.mark.parametrize("cut", [None, 0, 5, 17, 40])
def test_history_and_tail_are_the_stream_whatever_the_boundary(
    stream: Stream, hybrid: HybridEngine, cut: int | None
) -> None:
    first = _feed(stream, 0, 40)
    stream.garbage("trades", "BHP")  # dead-lettered: in no answer, but it moves the offsets
    if cut is not None:
        stream.commit(
            "trades",
            {p: min(cut, len(log)) for (t, p), log in stream.source.logs.items() if t.endswith("trades")},
        )
    _feed(stream, 40, 40)
    stream.produce("trades", first.slice(0, 6).drop("kafka_partition", "kafka_offset", "_topic"))  # re-sends
    for symbols in (("BHP",), ("RIO", "CBA"), tuple(SYMBOLS)):
        _check(stream, hybrid, symbols)


def test_resends_of_committed_and_uncommitted_ticks_are_dropped(stream: Stream, hybrid: HybridEngine) -> None:
    first = _feed(stream, 0, 20).drop("kafka_partition", "kafka_offset", "_topic")
    stream.commit("trades")
    second = _feed(stream, 20, 20).drop("kafka_partition", "kafka_offset", "_topic")
    stream.produce("trades", first.slice(0, 4))  # copies of committed ticks
    stream.produce("trades", second.slice(0, 4))  # copies of tail ticks
    result = hybrid.ticks("trades", tuple(SYMBOLS), ALL)
    assert result.rows.height == 40 and result.duplicates == 8
    assert result.tail_rows == 20 and result.history_rows == 20


def test_boundary_is_the_snapshot_and_its_own_offsets(stream: Stream, hybrid: HybridEngine) -> None:
    _feed(stream, 0, 12)
    snapshot = stream.commit("trades", {stream.partition("BHP"): 2})
    _feed(stream, 12, 12)
    result = hybrid.ticks("trades", ("BHP",), ALL)
    tp = (stream.topic("trades"), stream.partition("BHP"))
    assert result.boundary.snapshot_id == snapshot
    assert result.boundary.offsets == {tp: 2}
    assert result.tail.parts[tp].start == 2 and result.covered[tp] == len(stream.source.logs[tp])
    meta = result.meta()
    assert meta["snapshot_id"] == str(snapshot) and meta["truncated"] is False
    assert meta["boundary"] == [{"topic": tp[0], "partition": tp[1], "offset": 2}]


def test_one_symbol_reads_one_partition(stream: Stream, hybrid: HybridEngine, source: FakeSource) -> None:
    _feed(stream, 0, 40)
    hybrid.ticks("trades", ("RIO",), ALL)
    assert set(source.positions) == {(stream.topic("trades"), stream.partition("RIO"))}
    assert hybrid.router.exact


def test_rows_in_an_unexpected_partition_switch_routing_to_every_partition(
    stream: Stream, hybrid: HybridEngine, source: FakeSource
) -> None:
    home = stream.partition("BHP")
    other = (home + 1) % 4
    frame = ticks("trades", ["BHP"] * 6, list(range(1, 7)))
    values = stream.produce("trades", frame.slice(0, 3))
    # a producer with another partitioner wrote BHP's next ticks elsewhere
    moved = frame.slice(3, 3)
    offsets = [source.append(stream.topic("trades"), other, v) for v in encode_batch("trades", moved)]
    stream.rows["trades"].append(moved.with_columns(
        kafka_partition=pl.lit(other, dtype=pl.Int32), kafka_offset=pl.Series(offsets, dtype=pl.Int64),
        _topic=pl.lit(stream.topic("trades"))))  # fmt: skip
    stream.commit("trades", {other: len(offsets)})  # the moved ticks are committed, the rest is tail
    result = hybrid.ticks("trades", ("BHP",), ALL)
    assert not hybrid.router.exact
    assert set(result.rows["message_id"]) == set(frame["message_id"])
    assert values.height == 3


def test_cache_advances_from_where_it_stopped_and_trims_what_iceberg_took(
    stream: Stream, hybrid: HybridEngine, source: FakeSource
) -> None:
    _feed(stream, 0, 40)
    hybrid.ticks("trades", ("BHP",), ALL)
    positions = source.calls["position"]
    _feed(stream, 40, 8)
    result = hybrid.ticks("trades", ("BHP",), ALL)
    assert source.calls["position"] == positions  # continued, not re-read from the snapshot
    assert result.tail_rows == 12
    stream.commit("trades")
    result = hybrid.ticks("trades", ("BHP",), ALL)
    assert result.tail_rows == 0 and result.history_rows == 12
    assert source.calls["position"] == positions


def test_recent_windows_end_at_the_newest_tick_now_or_until(stream: Stream, hybrid: HybridEngine) -> None:
    _feed(stream, 0, 40)
    stream.commit("trades")
    _feed(stream, 40, 8)
    latest = hybrid.recent("trades", ("BHP",), 0.5)
    assert latest.window.end == T0 + timedelta(seconds=44, microseconds=1)
    assert latest.rows["exchange_ts"].to_list() == [
        T0 + timedelta(seconds=s) for s in (16, 20, 24, 28, 32, 36, 40, 44)
    ]
    assert latest.rows["committed"].to_list() == [True] * 6 + [False] * 2
    assert hybrid.recent("trades", ("BHP",), 15, anchor="now").rows.height == 0
    until = hybrid.recent("trades", ("BHP",), 0.25, until=T0 + timedelta(seconds=20))
    assert until.rows["exchange_ts"].to_list() == [T0 + timedelta(seconds=s) for s in (8, 12, 16)]
    with pytest.raises(InvalidParameterError):
        hybrid.recent("trades", ("BHP",), 0)
    with pytest.raises(InvalidParameterError):
        hybrid.recent("trades", ("BHP",), 10**6)


def test_live_bars_include_uncommitted_ticks_and_are_whole(stream: Stream, hybrid: HybridEngine) -> None:
    _feed(stream, 0, 400)  # BHP every 4 s for 400 s
    stream.commit("trades")
    _feed(stream, 400, 40)
    result = hybrid.live_bars(("BHP",), 60_000_000, 3)
    bars = result.rows
    assert result.kind == "bars" and bars["start"].is_sorted()
    last = bars.row(-1, named=True)
    assert last["start"] == T0 + timedelta(minutes=7) and last["uncommitted"] == last["trades"] == 5
    assert bars.row(0, named=True)["trades"] == 15  # the first bar is whole, though the window cuts it
    assert bars["start"].min() == T0 + timedelta(minutes=4)  # the window starts at 4:16
    assert int(bars["trades"].sum()) == 50  # BHP at 240, 244, …, 436 s


def test_quotes_and_an_empty_lake(hybrid: HybridEngine, stream: Stream) -> None:
    result = hybrid.ticks("quotes", ("BHP",), ALL)
    assert result.rows.height == 0 and result.boundary.snapshot_id is None
    _feed(stream, 0, 8, kind="quotes")
    result = hybrid.ticks("quotes", ("BHP",), ALL)
    assert result.rows.height == 2 and result.history_rows == 0 and result.tail_rows == 2
    assert "bid_price" in result.rows.columns


def test_cached_consistency_answers_without_asking_the_broker(
    stream: Stream, hybrid: HybridEngine, source: FakeSource
) -> None:
    _feed(stream, 0, 20)
    first = hybrid.ticks("trades", ("BHP",), ALL, consistency="cached")  # a new partition: read it once
    assert first.rows.height == 5
    asked = source.calls["high"]
    _feed(stream, 20, 8)
    cached = hybrid.ticks("trades", ("BHP",), ALL, consistency="cached")
    assert source.calls["high"] == asked and cached.rows.height == 5  # exact up to what it holds
    tp = (stream.topic("trades"), stream.partition("BHP"))
    assert cached.covered[tp] < cached.tail.parts[tp].high_watermark and not cached.truncated
    assert hybrid.ticks("trades", ("BHP",), ALL).rows.height == 7
