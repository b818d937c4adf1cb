"""Vectorised validation: each rule rejects what it should, with its reason, and nothing else."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import polars as pl

from k2 import schemas
from k2.schemas.validate import MESSAGE_TS, Validator, with_message_times

NOW = datetime(2024, 3, 11, 12, 0, tzinfo=UTC)


def _trades(**overrides: list[object]) -> pl.DataFrame:
    n = len(next(iter(overrides.values()))) if overrides else 3
    base: dict[str, list[object]] = {
        "message_id": ["x"] * n,
        "exchange": ["ASX"] * n,
        "symbol": ["BHP"] * n,
        "session": [date(2024, 3, 11)] * n,
        "sequence": list(range(1, n + 1)),
        "exchange_ts": [NOW - timedelta(hours=1)] * n,
        "ingest_ts": [NOW] * n,
        "price": [Decimal("36.5")] * n,
        "size": [Decimal(100)] * n,
        "trade_id": [None] * n,
        "qualifiers": [None] * n,
        "venue": [None] * n,
    }
    base.update(overrides)
    return pl.DataFrame(base, schema=schemas.frame_schema("trades"))


def test_valid_rows_pass() -> None:
    assert Validator(300).reasons("trades", _trades(), NOW).null_count() == 3


def test_each_rule_has_its_reason() -> None:
    frame = _trades(
        price=[Decimal("0"), Decimal("1"), Decimal("1"), Decimal("1"), Decimal("1"), Decimal("1")],
        size=[Decimal(1), Decimal(-1), Decimal(1), Decimal(1), Decimal(1), Decimal(1)],
        sequence=[1, 2, 0, 4, 5, 6],
        exchange_ts=[NOW, NOW, NOW, NOW + timedelta(hours=1), NOW - timedelta(days=9), NOW],
        symbol=["BHP", "BHP", "BHP", "BHP", "BHP", "ZZZ"],
    )
    reasons = Validator(300, known_symbols={"BHP"}).reasons("trades", frame, NOW).to_list()
    assert reasons == [
        "price must be > 0",
        "size must be >= 0",
        "sequence must be >= 1",
        "exchange time is in the future",
        "exchange time outside its trading session",
        "unknown symbol",
    ]


def test_unknown_symbols_allowed_without_reference_data() -> None:
    assert Validator(300).reasons("trades", _trades(symbol=["ZZZ"]), NOW).to_list() == [None]


def test_quotes_allow_crossed_and_one_sided_books() -> None:
    n = 3
    frame = pl.DataFrame(
        {
            "message_id": ["q"] * n, "exchange": ["ASX"] * n, "symbol": ["RIO"] * n,
            "session": [date(2024, 3, 11)] * n, "sequence": [1, 2, 3],
            "exchange_ts": [NOW] * n, "ingest_ts": [NOW] * n,
            "bid_price": [Decimal("61.2"), Decimal("61.0"), Decimal("-1")],
            "ask_price": [Decimal("61.1"), Decimal("0"), Decimal("61")],
            "bid_size": [Decimal(10), Decimal(10), Decimal(1)],
            "ask_size": [Decimal(10), Decimal(0), Decimal(1)],
        },
        schema=schemas.frame_schema("quotes"),
    )  # fmt: skip
    assert Validator(300).reasons("quotes", frame, NOW).to_list() == [None, None, "quote prices must be >= 0"]


def test_the_future_is_judged_against_each_rows_message_time_not_the_readers_clock() -> None:
    """A replay days later reaches the first read's verdict: the message's time does not move."""
    produced = NOW - timedelta(hours=2)  # the message's timestamp
    frame = _trades(exchange_ts=[produced + timedelta(seconds=299), produced + timedelta(seconds=301), NOW])
    times_us = [int(produced.timestamp() * 1_000_000)] * 2 + [-1]  # the last message has no timestamp
    judged = with_message_times(frame, times_us)
    assert judged[MESSAGE_TS].to_list() == [produced, produced, None]
    for reader_now in (NOW, NOW + timedelta(days=30)):
        assert Validator(300).reasons("trades", judged, reader_now).to_list() == [
            None,
            "exchange time is in the future",  # 301 s ahead of its message, however late it is read
            None,  # no message time: the reader's clock stands in
        ]
    # the same rows without message times: judged by the reader's clock alone, as before
    assert Validator(300).reasons("trades", frame, NOW).to_list() == [None, None, None]
