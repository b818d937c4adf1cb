"""bench_growth's trade generator: K2's trades columns, one session's rows in time order, deterministic."""

from __future__ import annotations

from datetime import UTC, date, datetime
from itertools import islice
from pathlib import Path

import polars as pl
from pyiceberg.catalog.sql import SqlCatalog

from benchmarks.bench_growth import GrowthState, parse_size, simulate_day, trading_days
from k2.lake.stamp import without_stamp
from k2.lake.tables import ensure_tables

SYMBOLS = [f"S{i:02d}" for i in range(10)]


def _two_days(seed: int = 3) -> tuple[pl.DataFrame, pl.DataFrame, GrowthState]:
    state = GrowthState(SYMBOLS, seed=seed)
    first = simulate_day(state, 0, date(2024, 1, 2), 5_000)
    second = simulate_day(state, 1, date(2024, 1, 3), 5_000)
    return first, second, state


def test_a_day_has_its_rows_in_its_session_in_exchange_time_order() -> None:
    first, _, _ = _two_days()
    assert first.height == 5_000
    assert first["exchange_ts"].is_sorted()
    assert first["exchange_ts"].min() >= datetime(2024, 1, 2, 10, tzinfo=UTC)  # type: ignore[operator]
    assert first["exchange_ts"].max() < datetime(2024, 1, 2, 16, tzinfo=UTC)  # type: ignore[operator]
    assert first["session"].unique().to_list() == [date(2024, 1, 2)]
    assert set(first["symbol"].unique()) <= set(SYMBOLS)
    assert first["message_id"].n_unique() == first.height
    assert (first["price"].cast(pl.Float64) > 0).all() and (first["size"].cast(pl.Float64) > 0).all()
    assert (first["ingest_ts"] > first["exchange_ts"]).all()


def test_sequences_and_offsets_continue_across_days_without_gaps() -> None:
    first, second, state = _two_days()
    both = pl.concat([first, second])
    assert both["kafka_offset"].to_list() == list(range(10_000))
    assert state.offset == 10_000
    per_symbol = (
        both.sort("symbol", "exchange_ts")
        .group_by("symbol", maintain_order=True)
        .agg(
            pl.col("sequence").diff().drop_nulls().eq(1).all().alias("contiguous"),
            pl.col("sequence").min().alias("first"),
        )
    )
    assert per_symbol["contiguous"].all()
    assert (per_symbol["first"] == 1).all()


def test_the_same_seed_gives_the_same_trades() -> None:
    a, b, _ = _two_days(seed=5)
    c, d, _ = _two_days(seed=5)
    assert a.equals(c) and b.equals(d)
    assert not a.equals(_two_days(seed=6)[0])


def test_rows_fit_the_trades_table_schema(tmp_path: Path) -> None:
    root = tmp_path
    catalog = SqlCatalog("t", uri=f"sqlite:///{root}/c.db", warehouse=f"file://{root}/w")
    catalog.create_namespace("k2")
    schema = without_stamp(ensure_tables(catalog, "k2")["trades"].schema().as_arrow())
    first, _, _ = _two_days()
    assert set(first.columns) == set(schema.names)
    first.select(schema.names).to_arrow().cast(schema)  # raises if a column does not fit


def test_sizes_and_calendar() -> None:
    assert parse_size("10M") == 10_000_000 and parse_size("500K") == 500_000 and parse_size("1234") == 1234
    days = list(islice(trading_days(date(2024, 1, 5)), 3))  # a Friday
    assert days == [date(2024, 1, 5), date(2024, 1, 8), date(2024, 1, 9)]
