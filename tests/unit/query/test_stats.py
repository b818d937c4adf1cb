"""Per symbol and session statistics and sequence gaps."""

from __future__ import annotations

import copy
from datetime import date

import polars as pl
import pytest

from k2.query.engine import QueryEngine
from k2.query.errors import CapExceededError, InvalidParameterError
from k2.query.stats import SessionRange
from tests.unit.query.lakedata import asx_pandas

ALL = SessionRange(None, None, max_days=31)


def test_symbol_days_match_pandas(engine: QueryEngine) -> None:
    got = {(r["symbol"], r["session"]): r for r in engine.symbols((), ALL).table.to_pylist()}
    for kind in ("trades", "quotes"):
        df = asx_pandas(kind)
        grouped = df.groupby(["symbol", "session"])["exchange_ts"].agg(["count", "min", "max"])
        for (symbol, session), row in grouped.iterrows():
            mine = got[(symbol, session)]
            assert mine[kind] == row["count"]
            first, last = ("first_trade", "last_trade") if kind == "trades" else ("first_quote", "last_quote")
            assert mine[first] == row["min"].to_pydatetime()
            assert mine[last] == row["max"].to_pydatetime()
    assert len(got) == 20  # 4 symbols x 5 sessions


def test_symbol_days_count_gaps(engine: QueryEngine) -> None:
    rows = engine.symbols(
        ("BHP",), SessionRange(date(2014, 3, 11), date(2014, 3, 12), max_days=31)
    ).table.to_pylist()
    by_day = {r["session"]: r for r in rows}
    assert set(by_day) == {date(2014, 3, 11), date(2014, 3, 12)}
    assert (by_day[date(2014, 3, 11)]["open_gaps"], by_day[date(2014, 3, 11)]["recovered_gaps"]) == (0, 1)
    assert (by_day[date(2014, 3, 12)]["open_gaps"], by_day[date(2014, 3, 12)]["missing"]) == (1, 1)


def test_gaps_state(engine: QueryEngine) -> None:
    gaps = engine.gaps((), ALL).table.to_pylist()
    assert [(g["symbol"], g["kind"], g["first_missing"], g["status"]) for g in gaps] == [
        ("BHP", "trades", 100, "recovered"),
        ("RIO", "quotes", 7, "open"),
        ("BHP", "trades", 500, "open"),
    ]
    assert gaps[0]["recovered_by"] == "ab" * 16
    open_only = engine.gaps(("BHP",), ALL, status="open").table.to_pylist()
    assert [g["first_missing"] for g in open_only] == [500]
    assert engine.gaps((), ALL, kind="quotes").table.column("symbol").to_pylist() == ["RIO"]


def test_gap_counts_per_symbol_most_first(engine: QueryEngine) -> None:
    assert engine.gap_counts() == [  # from the same event log as test_gaps_state
        {"symbol": "BHP", "opened": 2, "recovered": 1, "pending": 0},
        {"symbol": "RIO", "opened": 1, "recovered": 0, "pending": 0},
    ]
    assert engine.gap_counts(limit=1)[0]["symbol"] == "BHP"


def test_gap_counts_add_the_pending_holes(engine: QueryEngine) -> None:
    holes = pl.DataFrame({"symbol": ["CBA", "CBA", "RIO"]})
    counted = copy.copy(engine)
    counted.pending = lambda: holes
    assert counted.gap_counts() == [  # opened + pending, then by name
        {"symbol": "BHP", "opened": 2, "recovered": 1, "pending": 0},
        {"symbol": "CBA", "opened": 0, "recovered": 0, "pending": 2},
        {"symbol": "RIO", "opened": 1, "recovered": 0, "pending": 1},
    ]


def test_session_range_validation() -> None:
    with pytest.raises(InvalidParameterError, match="before start"):
        SessionRange(date(2014, 3, 12), date(2014, 3, 11), max_days=31)
    with pytest.raises(CapExceededError, match=r"at most 31 days .*api.max_range_days"):
        SessionRange(date(2014, 1, 1), date(2014, 3, 1), max_days=31)
