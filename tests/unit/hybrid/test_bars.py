from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import polars as pl

from k2.hybrid.bars import bars_from_trades, combine, finish, partials
from tests.unit.hybrid.conftest import ticks

MINUTE = 60_000_000


def naive(frame: pl.DataFrame, interval_s: int) -> dict[tuple[str, datetime], tuple[Decimal, ...]]:
    """Bars the slow way, for UTC exchanges: bucket = floor(seconds since midnight / interval)."""
    out: dict[tuple[str, datetime], list[dict[str, object]]] = {}
    for r in frame.sort("exchange_ts", "sequence").iter_rows(named=True):
        ts = r["exchange_ts"]
        midnight = ts.replace(hour=0, minute=0, second=0, microsecond=0)
        start = midnight + timedelta(seconds=(ts - midnight).total_seconds() // interval_s * interval_s)
        out.setdefault((r["symbol"], start), []).append(r)
    return {
        k: (v[0]["price"], max(x["price"] for x in v), min(x["price"] for x in v), v[-1]["price"],
            sum(x["size"] for x in v), Decimal(len(v)))
        for k, v in out.items()
    }  # fmt: skip


def test_bars_match_a_naive_computation() -> None:
    rng = random.Random(4)
    n = 300
    frame = ticks("trades", [rng.choice(["A", "B"]) for _ in range(n)], list(range(1, n + 1)),
                  seconds=sorted(rng.uniform(0, 900) for _ in range(n)))  # fmt: skip
    bars = bars_from_trades(frame, 5 * MINUTE)
    got = {
        (r["symbol"], r["start"]): (
            r["open"],
            r["high"],
            r["low"],
            r["close"],
            r["volume"],
            Decimal(r["trades"]),
        )
        for r in bars.iter_rows(named=True)
    }
    assert got == naive(frame, 300)
    assert (bars["end"] - bars["start"]).dt.total_seconds().to_list() == [300] * bars.height


def test_combining_partials_equals_one_pass() -> None:
    frame = ticks("trades", ["A"] * 50, list(range(1, 51)), seconds=[i * 7.0 for i in range(50)])
    whole = bars_from_trades(frame, MINUTE)
    pieces = pl.concat([partials(frame.slice(0, 17), MINUTE), partials(frame.slice(17), MINUTE)])
    assert finish(combine(pieces)).equals(whole)


def test_asx_bars_align_to_the_sydney_day_and_count_uncommitted_trades() -> None:
    frame = ticks("trades", ["BHP", "BHP"], [1, 2]).with_columns(
        exchange=pl.lit("ASX"),
        exchange_ts=pl.Series(
            [datetime(2014, 3, 10, 23, 0, 5, tzinfo=UTC), datetime(2014, 3, 10, 23, 0, 9, tzinfo=UTC)]
        ),
        committed=pl.Series([True, False]),
    )
    bar = bars_from_trades(frame, MINUTE).row(0, named=True)
    assert bar["session"].isoformat() == "2014-03-11"  # 10:00 in Sydney
    assert bar["start"] == datetime(2014, 3, 10, 23, 0, tzinfo=UTC)
    assert (bar["trades"], bar["uncommitted"]) == (2, 1)
