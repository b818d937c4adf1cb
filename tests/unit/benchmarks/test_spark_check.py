"""spark_check's comparison: exact decimals, VWAP within 1e-9, missing and extra keys, one form per instant."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pyarrow as pa

from benchmarks.spark_check import compare

_T = datetime(2014, 3, 10, 23, 0, tzinfo=UTC)


def _bars(start: list[datetime], close: list[str], vwap: list[float], *, naive: bool = False) -> pa.Table:
    return pa.table(
        {
            "symbol": ["BHP"] * len(start),
            "start": pa.array([s.replace(tzinfo=None) for s in start] if naive else start,
                              pa.timestamp("us") if naive else pa.timestamp("us", "UTC")),
            "close": pa.array([Decimal(c) for c in close], pa.decimal128(18, 6)),
            "vwap": vwap,
        }
    )  # fmt: skip


def test_equal_bars_match_across_decimal_scales_and_time_zones() -> None:
    k2 = _bars([_T], ["36.15"], [36.151530433225915])
    spark = _bars([_T], ["36.150000"], [36.151530433225915 * (1 + 1e-12)], naive=True)
    spark = spark.set_column(2, "close", pa.array([Decimal("36.150000")], pa.decimal128(28, 6)))
    verdict = compare("bars", k2, spark, ("symbol", "start"))
    assert verdict.ok, str(verdict)
    assert verdict.columns == ("symbol", "start", "close", "vwap")


def test_a_cent_a_vwap_or_a_bucket_apart_is_a_difference() -> None:
    later = _T.replace(minute=1)
    k2 = _bars([_T, later], ["36.15", "36.20"], [36.1515, 36.2])
    verdict = compare(
        "bars", k2, _bars([_T, later], ["36.15", "36.21"], [36.1515, 36.2]), ("symbol", "start")
    )
    assert not verdict.ok and [d[1] for d in verdict.differing] == ["close"]
    verdict = compare(
        "bars", k2, _bars([_T, later], ["36.15", "36.20"], [36.1516, 36.2]), ("symbol", "start")
    )
    assert not verdict.ok and [d[1] for d in verdict.differing] == ["vwap"]
    verdict = compare("bars", k2, _bars([_T], ["36.15"], [36.1515]), ("symbol", "start"))
    assert not verdict.ok and verdict.only_k2 == [("BHP", later)] and "DIFFER" in str(verdict)
