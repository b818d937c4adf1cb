"""The as-of join against pandas.merge_asof on the real ASX files."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from k2.query.engine import QueryEngine
from k2.query.params import TimeRange
from tests.unit.query.conftest import Lake
from tests.unit.query.lakedata import asx_pandas


def pandas_asof(symbols: list[str], window: TimeRange, tolerance: pd.Timedelta) -> pd.DataFrame:
    trades = asx_pandas("trades")
    trades = trades[trades["symbol"].isin(symbols)]
    trades = trades[(trades["exchange_ts"] >= window.start) & (trades["exchange_ts"] < window.end)]
    trades = trades.sort_values(["exchange_ts", "symbol", "file_order"], kind="stable")
    quotes = asx_pandas("quotes")
    quotes = quotes[quotes["symbol"].isin(symbols)].sort_values(["exchange_ts", "file_order"], kind="stable")
    # Several quotes in one millisecond: the last one (file order) is the prevailing one.
    quotes = quotes.drop_duplicates(["symbol", "exchange_ts"], keep="last")
    quotes = quotes.rename(columns={"exchange_ts": "quote_ts"})[
        ["symbol", "quote_ts", "bid_price", "ask_price", "bid_size", "ask_size"]
    ]
    merged = pd.merge_asof(
        trades, quotes, left_on="exchange_ts", right_on="quote_ts", by="symbol", direction="backward",
        tolerance=tolerance, allow_exact_matches=True,
    )  # fmt: skip
    two_sided = (merged["bid_size"] > 0) & (merged["ask_size"] > 0)
    merged["mid"] = ((merged["bid_price"] + merged["ask_price"]) / 2).where(two_sided)
    merged["spread"] = (merged["ask_price"] - merged["bid_price"]).where(two_sided)
    merged["age_us"] = (merged["exchange_ts"] - merged["quote_ts"]) // pd.Timedelta(microseconds=1)
    return merged


@pytest.mark.parametrize(
    ("symbols", "start", "end", "tolerance_s"),
    [
        (["BHP"], datetime(2014, 3, 10, 23, 0, tzinfo=UTC), datetime(2014, 3, 11, 5, 30, tzinfo=UTC), 300),
        (
            ["RIO", "BHP"],
            datetime(2014, 3, 12, 22, 55, tzinfo=UTC),
            datetime(2014, 3, 13, 1, 0, tzinfo=UTC),
            2,
        ),
        (
            ["DVN", "MWR"],
            datetime(2014, 3, 9, 13, 0, tzinfo=UTC),
            datetime(2014, 3, 14, 13, 0, tzinfo=UTC),
            60,
        ),
    ],
)
def test_asof_matches_pandas(
    engine: QueryEngine, symbols: list[str], start: datetime, end: datetime, tolerance_s: int
) -> None:
    window = TimeRange(start, end)
    expected = pandas_asof(symbols, window, pd.Timedelta(seconds=tolerance_s))
    got = engine.trades_with_quotes(tuple(symbols), window, tolerance_s * 1_000_000).table.to_pandas()
    assert len(got) == len(expected) > 0
    assert (got["symbol"].to_numpy() == expected["symbol"].to_numpy()).all()
    assert (got["exchange_ts"].to_numpy() == expected["exchange_ts"].to_numpy()).all()
    for ours, theirs in (
        ("bid_price", "bid_price"),
        ("ask_price", "ask_price"),
        ("mid", "mid"),
        ("spread", "spread"),
    ):
        a = got[ours].astype(float).to_numpy()
        b = expected[theirs].astype(float).to_numpy()
        assert np.array_equal(np.isnan(a), np.isnan(b)), ours
        assert np.allclose(a[~np.isnan(a)], b[~np.isnan(b)], rtol=0, atol=1e-9), ours
    age = got["quote_age_us"].astype("float").to_numpy()
    assert np.allclose(age[~np.isnan(age)], expected["age_us"].dropna().to_numpy())
    assert (age[~np.isnan(age)] <= tolerance_s * 1_000_000).all()


def test_stale_quotes_are_null_not_wrong(engine: QueryEngine) -> None:
    """The first trades of a session meet only the previous evening's book: beyond 1 s, no quote."""
    window = TimeRange(datetime(2014, 3, 10, 20, 0, tzinfo=UTC), datetime(2014, 3, 10, 23, 0, tzinfo=UTC))
    loose = engine.trades_with_quotes(("BHP",), window, 86_400_000_000).table
    tight = engine.trades_with_quotes(("BHP",), window, 1_000).table
    assert loose.num_rows == tight.num_rows > 0
    assert loose.column("bid_price").null_count < tight.column("bid_price").null_count


def test_the_in_memory_join_is_duckdbs_answer_to_the_byte(asx_lake: Lake) -> None:
    """Hot rows take k2.query.prevailing; without the row cache DuckDB answers: same schema, same bytes."""
    import random
    from datetime import timedelta

    from k2.query.reader import QueryLimits

    limits = QueryLimits(max_rows=1_000_000, timeout_s=30)
    memory = QueryEngine(asx_lake.catalog, "k2", limits, refresh_interval_s=0)
    duck = QueryEngine(asx_lake.catalog, "k2", limits, refresh_interval_s=0, row_cache_rows=0)
    rng = random.Random(17)
    before = _observations("asof_memory")
    try:
        for _ in range(12):
            start = datetime(
                2014, 3, rng.choice([10, 11, 12, 13, 14]), rng.randrange(8), rng.randrange(60), tzinfo=UTC
            )
            window = TimeRange(start, start + timedelta(minutes=rng.choice([15, 90, 600])))
            symbols = rng.choice([("BHP",), ("RIO",), ("BHP", "RIO"), ("DVN", "MWR", "BHP")])
            tolerance = rng.choice([1, 1_000_000, 300_000_000, 3_600_000_000])
            fast = memory.trades_with_quotes(symbols, window, tolerance).table
            slow = duck.trades_with_quotes(symbols, window, tolerance).table
            assert fast.schema.equals(slow.schema)
            assert fast.equals(slow), (symbols, window, tolerance)
    finally:
        memory.close()
        duck.close()
    # every window with data on both sides took the in-memory path (one without files takes DuckDB)
    assert _observations("asof_memory") - before >= 10


def _observations(label: str) -> float:
    from k2.query.runner import QUERY_SECONDS

    for metric in QUERY_SECONDS.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count") and sample.labels.get("query") == label:
                return sample.value
    return 0.0
