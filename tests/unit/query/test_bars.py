"""Bars and VWAP against an independent pandas computation on the real ASX files."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from k2.lake.maintenance import compact
from k2.observability.metrics import sample
from k2.query.engine import QueryEngine
from k2.query.errors import CapExceededError
from k2.query.params import TimeRange
from k2.query.partials import PartialCache
from k2.query.reader import QueryLimits
from tests.unit.query.lakedata import asx_frames, asx_pandas, lineage, new_catalog

SYDNEY = ZoneInfo("Australia/Sydney")


def same_bars(a: pa.Table, b: pa.Table) -> bool:
    """Equal bars; VWAP up to float summation order (partials merge in another order)."""
    exact = [c for c in a.column_names if c != "vwap"]
    return a.select(exact).equals(b.select(exact)) and np.allclose(
        a["vwap"].to_numpy(), b["vwap"].to_numpy(), rtol=1e-12
    )


def session_window(day: date) -> TimeRange:
    start = pd.Timestamp(day, tz=SYDNEY)
    return TimeRange(
        start.tz_convert("UTC").to_pydatetime(),
        (start + pd.Timedelta(days=1)).tz_convert("UTC").to_pydatetime(),
    )


def pandas_bars(symbol: str, day: date, interval: str) -> pd.DataFrame:
    df = asx_pandas("trades")
    df = df[(df["symbol"] == symbol) & (df["session"] == day)].sort_values(
        ["local", "file_order"], kind="stable"
    )
    midnight = df["local"].dt.normalize()
    step = pd.Timedelta(interval)
    bucket = midnight + ((df["local"] - midnight) // step) * step
    df = df.assign(bucket=bucket, notional=df["price"] * df["size"])
    out = df.groupby("bucket", sort=True).agg(
        open=("price", "first"), high=("price", "max"), low=("price", "min"), close=("price", "last"),
        volume=("size", "sum"), notional=("notional", "sum"), trades=("price", "size"),
    )  # fmt: skip
    out["vwap"] = out["notional"] / out["volume"]
    out.index = out.index.tz_localize(SYDNEY).tz_convert("UTC")
    return out


@pytest.mark.parametrize(
    ("symbol", "day", "interval", "interval_us"),
    [
        ("BHP", date(2014, 3, 11), "1min", 60_000_000),
        ("RIO", date(2014, 3, 13), "5min", 300_000_000),
        ("BHP", date(2014, 3, 14), "1s", 1_000_000),
        ("DVN", date(2014, 3, 12), "1h", 3_600_000_000),
        ("RIO", date(2014, 3, 10), "1D", 86_400_000_000),
    ],
)
def test_bars_match_pandas(
    engine: QueryEngine, symbol: str, day: date, interval: str, interval_us: int
) -> None:
    expected = pandas_bars(symbol, day, interval)
    got = engine.bars((symbol,), session_window(day), interval_us).table.to_pandas()
    assert len(got) == len(expected) > 0
    assert (got["start"].to_numpy() == expected.index.to_numpy()).all()
    for column in ("open", "high", "low", "close", "volume"):
        assert np.allclose(got[column].astype(float), expected[column].astype(float), rtol=0, atol=1e-9), (
            column
        )
    assert (got["trades"].to_numpy() == expected["trades"].to_numpy()).all()
    assert np.allclose(got["vwap"], expected["vwap"], rtol=1e-12)
    assert (got["session"].astype(str) == str(day)).all()
    width = pd.Timedelta(microseconds=interval_us)
    assert ((got["end"] - got["start"]) <= width).all()


def test_daily_bar_is_the_session(engine: QueryEngine) -> None:
    """A 1-day bar starts at Sydney midnight (13:00 UTC the day before, under AEDT)."""
    day = date(2014, 3, 12)
    bars = engine.bars(("BHP",), session_window(day), 86_400_000_000).table.to_pylist()
    assert len(bars) == 1
    assert bars[0]["start"].isoformat() == "2014-03-11T13:00:00+00:00"
    assert bars[0]["trades"] == int((asx_pandas("trades").query("symbol == 'BHP'")["session"] == day).sum())


def test_bars_cover_whole_buckets_starting_in_window(engine: QueryEngine) -> None:
    whole = engine.bars(("BHP",), session_window(date(2014, 3, 11)), 900_000_000).table.to_pylist()
    middle = whole[5]
    window = TimeRange(middle["start"] + pd.Timedelta(seconds=1), whole[8]["start"])
    part = engine.bars(("BHP",), window, 900_000_000).table.to_pylist()
    assert [b["start"] for b in part] == [b["start"] for b in whole[6:8]]
    assert part[0] == whole[6]


def test_tz_override_realigns_buckets(engine: QueryEngine) -> None:
    utc_days = engine.bars(("BHP",), session_window(date(2014, 3, 11)), 86_400_000_000, tz="UTC").table
    starts = {s.isoformat() for s in utc_days.column("start").to_pylist()}
    assert starts == {"2014-03-11T00:00:00+00:00"}  # the UTC day starting inside the Sydney session


def test_partials_are_reused_and_exact(engine: QueryEngine) -> None:
    cache = PartialCache()
    window = session_window(date(2014, 3, 13))
    from k2.query import bars as bars_mod

    first = bars_mod.bars(engine.reader, cache, ("RIO", "BHP"), window, 60_000_000).table
    filled = len(cache)
    assert filled > 0
    again = bars_mod.bars(engine.reader, cache, ("BHP", "RIO"), window, 60_000_000).table
    assert len(cache) == filled  # nothing recomputed
    assert again.equals(first)


def test_bar_count_cap(engine: QueryEngine) -> None:
    tight = QueryEngine(engine.reader.catalog, "k2", QueryLimits(max_rows=10), refresh_interval_s=0)
    with pytest.raises(CapExceededError, match=r"more than 10 rows \(api.max_rows\)"):
        tight.bars(("BHP",), session_window(date(2014, 3, 11)), 60_000_000)


def test_merged_partials_follow_appends_and_compaction(tmp_path: Path) -> None:
    """The per-partition merged partials are extended on appends and rebuilt after a compaction."""
    day = date(2014, 3, 11)
    catalog, tables = new_catalog(tmp_path)
    frame = asx_frames((day,))["trades"]
    table = tables["trades"]
    warm = QueryEngine(catalog, "k2", refresh_interval_s=0)
    window = session_window(day)
    step = -(-frame.height // 4)
    for i in range(4):
        table.append(lineage(frame.slice(i * step, step), table, i * step))
        builds = sample("k2_query_partials_total", {"kind": "bars", "result": "merged_build"})
        extended = warm.bars(("BHP", "RIO"), window, 300_000_000).table
        cold = (
            QueryEngine(catalog, "k2", refresh_interval_s=0).bars(("BHP", "RIO"), window, 300_000_000).table
        )
        assert same_bars(extended, cold)
        assert sample("k2_query_partials_total", {"kind": "bars", "result": "merged_build"}) > builds
    compact(table.refresh())
    after = warm.bars(("BHP", "RIO"), window, 300_000_000).table
    assert same_bars(after, extended)
    expected = pandas_bars("BHP", day, "5min")
    got = after.to_pandas().query("symbol == 'BHP'")
    assert (got["trades"].to_numpy() == expected["trades"].to_numpy()).all()


@pytest.mark.parametrize("interval_us", [60_000_000, 900_000_000, 86_400_000_000])
def test_live_bars_equal_lake_bars_on_the_same_ticks(engine: QueryEngine, interval_us: int) -> None:
    """One definition: the hybrid engine's in-memory bars (k2.hybrid.bars) are the lake's, row for row."""
    import polars as pl

    from k2.hybrid.bars import bars_from_trades

    symbols, window = ("BHP", "RIO"), session_window(date(2014, 3, 12))
    lake = pl.from_arrow(engine.bars(symbols, window, interval_us).table)
    assert isinstance(lake, pl.DataFrame) and lake.height > 0
    trades = asx_frames()["trades"].filter(pl.col("symbol").is_in(symbols))
    start, end = pl.lit(window.start), pl.lit(window.end)
    live = bars_from_trades(trades, interval_us).filter((pl.col("start") >= start) & (pl.col("start") < end))
    live = live.select(lake.columns)
    lake = lake.cast(dict(live.schema))
    exact = [c for c in lake.columns if c != "vwap"]
    assert live.select(exact).equals(lake.select(exact))
    # notional is a float sum: the lake adds per-file partials, so the last bit may differ
    assert np.allclose(live["vwap"].to_numpy(), lake["vwap"].to_numpy(), rtol=1e-12, atol=0)


def test_open_and_close_are_ordered_by_time_then_sequence_at_the_extremes() -> None:
    """The one-number (time, sequence) key orders ties on time by sequence, up to int64's ends."""
    from datetime import UTC, datetime

    from k2.query.bars import merge_sql, partials_sql
    from k2.query.runner import DuckRunner

    t0, t1 = datetime(2024, 1, 2, 10, 0, 1, tzinfo=UTC), datetime(2024, 1, 2, 10, 0, 2, tzinfo=UTC)
    big, small = 2**63 - 1, -(2**63)
    rows = pa.table({
        "exchange": ["SIM"] * 5, "symbol": ["A"] * 5,
        "exchange_ts": pa.array([t1, t0, t0, t1, t0], pa.timestamp("us", "UTC")),
        "sequence": pa.array([5, big, small, big, 0], pa.int64()),
        "price": pa.array([50, 20, 10, 40, 30], pa.decimal128(18, 6)),
        "size": pa.array([1, 1, 1, 1, 1], pa.decimal128(18, 6)),
    })  # fmt: skip
    runner = DuckRunner()
    params: list[object] = []
    one = runner.table(
        "t", partials_sql("_rows", 60_000_000, None, params), params, timeout_s=10, tables={"_rows": rows}
    )
    assert (
        one["open"].to_pylist()[0] == 10 and one["close"].to_pylist()[0] == 40
    )  # (t0, -2^63) and (t1, 2^63 - 1)
    assert one["first_seq"].to_pylist() == [small] and one["last_seq"].to_pylist() == [big]
    halves = []
    for part in (rows.slice(0, 2), rows.slice(2)):  # partials of two files, merged
        params = []
        halves.append(
            runner.table(
                "t",
                partials_sql("_rows", 60_000_000, None, params),
                params,
                timeout_s=10,
                tables={"_rows": part},
            )
        )
    merged = runner.table("t", merge_sql("_p"), [], timeout_s=10, tables={"_p": pa.concat_tables(halves)})
    assert merged.select(["open", "close", "first_seq", "last_seq"]).equals(
        one.select(["open", "close", "first_seq", "last_seq"])
    )
    runner.close()
