"""Tick pages, cursors and the latest tick per symbol, checked against pandas."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from k2.observability.metrics import sample
from k2.query.engine import QueryEngine
from k2.query.errors import CapExceededError, InvalidCursorError
from k2.query.params import TimeRange, epoch_us
from k2.query.rows import prefetch
from tests.unit.query.lakedata import asx_pandas

WINDOW = TimeRange(datetime(2014, 3, 11, 3, 0, tzinfo=UTC), datetime(2014, 3, 11, 3, 15, tzinfo=UTC))


def expected(kind: str, symbols: list[str], window: TimeRange) -> pd.DataFrame:
    df = asx_pandas(kind)
    df = df[
        df["symbol"].isin(symbols) & (df["exchange_ts"] >= window.start) & (df["exchange_ts"] < window.end)
    ]
    return df


@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("kind", ["trades", "quotes"])
def test_pages_cover_the_window_exactly_once(engine: QueryEngine, kind: str, order: str) -> None:
    want = expected(kind, ["BHP", "RIO"], WINDOW)
    seen: list[tuple[object, ...]] = []
    cursor = None
    pages = 0
    while True:
        result = engine.ticks(kind, ("BHP", "RIO"), WINDOW, order=order, limit=250, cursor=cursor)  # type: ignore[arg-type]
        rows = result.table.select(["exchange_ts", "symbol", "sequence"]).to_pylist()
        seen += [(r["exchange_ts"], r["symbol"], r["sequence"]) for r in rows]
        pages += 1
        cursor = result.next_cursor
        if cursor is None:
            break
    assert pages == -(-len(want) // 250) or (len(want) % 250 == 0 and pages == len(want) // 250 + 1)
    assert len(seen) == len(set(seen)) == len(want) > 500
    assert seen == sorted(seen, reverse=order == "desc")
    assert {s for _, s, _ in seen} == {"BHP", "RIO"}


def test_cursor_pins_the_snapshot_and_the_query(engine: QueryEngine) -> None:
    first = engine.ticks("trades", ("BHP",), WINDOW, limit=10)
    assert first.next_cursor is not None
    other = TimeRange(WINDOW.start, WINDOW.end.replace(minute=30))
    with pytest.raises(InvalidCursorError, match="different query"):
        engine.ticks("trades", ("BHP",), other, limit=10, cursor=first.next_cursor)
    with pytest.raises(InvalidCursorError, match="not a cursor"):
        engine.ticks("trades", ("BHP",), WINDOW, limit=10, cursor="bm90IGEgY3Vyc29y")
    second = engine.ticks("trades", ("BHP",), WINDOW, limit=10, cursor=first.next_cursor)
    assert second.snapshots == first.snapshots


def test_limit_cap_says_the_cap(engine: QueryEngine) -> None:
    with pytest.raises(CapExceededError, match=r"exceeds the cap of 100000 rows .*api.max_rows"):
        engine.ticks("trades", ("BHP",), WINDOW, limit=100_001)


def test_ticks_carry_lineage_and_canonical_types(engine: QueryEngine) -> None:
    table = engine.ticks("quotes", ("RIO",), WINDOW, limit=5).table
    assert str(table.schema.field("bid_price").type) == "decimal128(18, 6)"
    assert str(table.schema.field("exchange_ts").type) == "timestamp[us, tz=UTC]"
    assert table.column("kafka_offset").null_count == 0


def test_latest_matches_pandas(engine: QueryEngine) -> None:
    got = {r["symbol"]: r for r in engine.latest(("BHP", "RIO", "DVN", "MWR")).table.to_pylist()}
    assert set(got) == {"BHP", "RIO", "DVN", "MWR"}
    for kind, ts_col, seq_col in (
        ("trades", "trade_ts", "trade_sequence"),
        ("quotes", "quote_ts", "quote_sequence"),
    ):
        df = asx_pandas(kind).sort_values(["exchange_ts", "file_order"], kind="stable")
        last = df.groupby("symbol").tail(1).set_index("symbol")
        for symbol, row in got.items():
            assert row[ts_col] == last.loc[symbol, "exchange_ts"].to_pydatetime()
        assert seq_col in got["BHP"]
    assert float(got["MWR"]["price"]) == pytest.approx(
        float(asx_pandas("trades").query("symbol == 'MWR'")["price"].iloc[-1])
    )


def test_newest_us_is_one_tables_part_of_latest(engine: QueryEngine) -> None:
    for kind in ("trades", "quotes"):
        df = asx_pandas(kind)
        for symbols in (("BHP",), ("RIO", "MWR")):
            expected = df[df["symbol"].isin(symbols)]["exchange_ts"].max().to_pydatetime()
            assert engine.newest_us(kind, symbols) == epoch_us(expected)
    assert engine.newest_us("trades", ("NOSUCH",)) is None


def test_newest_us_reads_hot_files_without_a_query(engine: QueryEngine) -> None:
    """With the files decoded in the hot-row cache the answer comes from their symbol index (the
    same answer as from Parquet, which the engine without a cache reads)."""
    reader = engine.reader
    for kind in ("trades", "quotes"):
        table = engine.current_table(kind)
        files = reader.fileset(kind, table, table.current_snapshot())
        prefetch(reader, kind, files.paths.tolist())
        df = asx_pandas(kind)
        for symbols in (("BHP",), ("RIO", "MWR"), ("NOSUCH",)):
            queries = sample("k2_query_seconds_count", {"query": "latest"})
            rows = df[df["symbol"].isin(symbols)]["exchange_ts"]
            expected = epoch_us(rows.max().to_pydatetime()) if len(rows) else None
            assert engine.newest_us(kind, symbols) == expected
            ran = sample("k2_query_seconds_count", {"query": "latest"}) - queries
            assert (ran == 0) if reader.rows.max_rows > 0 else (ran >= 1)  # without a cache: Parquet


def test_latest_without_symbols_lists_recent_ones(engine: QueryEngine) -> None:
    symbols = set(engine.latest(()).table.column("symbol").to_pylist())
    assert {"BHP", "RIO"} <= symbols
