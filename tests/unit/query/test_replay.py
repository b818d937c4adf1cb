"""Replay: exchange-time order, chunked streaming, pacing."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest

from k2.query.engine import QueryEngine
from k2.query.errors import InvalidParameterError
from k2.query.params import TimeRange
from k2.query.replay import replay
from tests.unit.query.lakedata import asx_pandas

WINDOW = TimeRange(datetime(2014, 3, 11, 2, 0, tzinfo=UTC), datetime(2014, 3, 11, 2, 10, tzinfo=UTC))


def expected_count(kinds: tuple[str, ...], symbols: tuple[str, ...]) -> int:
    total = 0
    for kind in kinds:
        df = asx_pandas(kind)
        mask = (df["exchange_ts"] >= WINDOW.start) & (df["exchange_ts"] < WINDOW.end)
        if symbols:
            mask &= df["symbol"].isin(symbols)
        total += int(mask.sum())
    return total


def test_replay_merges_kinds_in_exchange_time_order_in_chunks(engine: QueryEngine) -> None:
    stream = engine.replay(("trades", "quotes"), (), WINDOW, batch_rows=300)
    sizes, keys, kinds = [], [], set()
    for chunk in stream.chunks:
        sizes.append(chunk.num_rows)
        rows = chunk.select(["exchange_ts", "kind"]).to_pylist()
        keys += [(r["exchange_ts"], r["kind"]) for r in rows]
        kinds |= {r["kind"] for r in rows}
    assert sum(sizes) == expected_count(("trades", "quotes"), ()) > 1000
    assert max(sizes) <= 2048 and len(sizes) > 3  # streamed in bounded batches, not one table
    assert keys == sorted(keys)
    assert kinds == {"trade", "quote"}
    assert set(stream.snapshots) == {"trades", "quotes"}


def test_pacing_sleeps_exchange_time_divided_by_speed(engine: QueryEngine) -> None:
    slept: list[float] = []
    stream = replay(engine.reader, ("trades",), ("BHP",), WINDOW, speed=600.0, sleep=slept.append)
    rows = sum(chunk.num_rows for chunk in stream.chunks)
    assert rows == expected_count(("trades",), ("BHP",))
    df = asx_pandas("trades")
    df = df[(df["symbol"] == "BHP") & (df["exchange_ts"] >= WINDOW.start) & (df["exchange_ts"] < WINDOW.end)]
    span = (df["exchange_ts"].max() - df["exchange_ts"].min()).total_seconds()
    # The fake sleep does not advance the clock: each wait is the full due time of the next row,
    # so the largest wait is the whole span at 600x.
    assert max(slept) == pytest.approx(span / 600.0, rel=0.05)


@pytest.mark.parametrize("speed", [0.0, -1.0, 1e-9, 0.05, 1e9, float("nan")])
def test_bad_speed(engine: QueryEngine, speed: float) -> None:
    with pytest.raises(InvalidParameterError, match="speed"):
        engine.replay(("trades",), ("BHP",), WINDOW, speed=speed)


def test_empty_window_streams_nothing(engine: QueryEngine) -> None:
    window = TimeRange(datetime(2020, 1, 1, tzinfo=UTC), datetime(2020, 1, 2, tzinfo=UTC))
    chunks = list(engine.replay(("trades", "quotes"), ("BHP",), window).chunks)
    assert sum(c.num_rows for c in chunks) == 0
    assert all(isinstance(c, pa.RecordBatch) for c in chunks)
