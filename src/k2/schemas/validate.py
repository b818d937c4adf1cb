"""Vectorised validation of decoded ticks: every row either passes or gets a reason.

It lives beside the schemas because both the pipeline and the hybrid tail apply it, and neither
may import the other.

The checks are polars expressions over the whole batch, so a batch of 50,000 ticks costs a few
milliseconds whatever its content; the reasons of failing rows become dead letters.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

__all__ = ["MESSAGE_TS", "Validator", "known_symbols", "with_message_times"]

#: A frame's column of each row's Kafka message time (µs, UTC; null where the message has none):
#: "in the future" is judged against it, so a replay reaches the first read's verdict.
MESSAGE_TS = "_message_ts"

# A session can be announced ahead of the exchange clock (an early roll to the next business day,
# across a weekend and a holiday), and ticks can print up to a day after their session date
# in UTC; anything further out is a broken timestamp or session field.
_EARLY = timedelta(days=4)
_LATE = timedelta(days=2)


class Validator:
    """Checks price, size, timestamps against the session, and symbols against reference data."""

    def __init__(self, max_clock_skew_s: float, known_symbols: set[str] | None = None) -> None:
        self.max_clock_skew = timedelta(seconds=max_clock_skew_s)
        self.known_symbols = known_symbols

    def reasons(self, kind: str, frame: pl.DataFrame, now: datetime | None = None) -> pl.Series:
        """A String series: null where the row is valid, else the first failed check's reason.

        Exchange time may lead the row's message time (``MESSAGE_TS``, when the frame has it) by
        ``max_clock_skew_s``; ``now`` stands in for a row without one.
        """
        now = now or datetime.now(UTC)
        reference = pl.lit(now, dtype=pl.Datetime("us", "UTC"))
        if MESSAGE_TS in frame.columns:
            reference = pl.col(MESSAGE_TS).fill_null(reference)
        checks: list[tuple[pl.Expr, str]] = []
        if kind == "trades":
            checks += [
                (pl.col("price") <= 0, "price must be > 0"),
                (pl.col("size") < 0, "size must be >= 0"),
            ]
        else:  # a crossed book (bid above ask) is real in auctions: data, not an error
            checks += [
                ((pl.col("bid_price") < 0) | (pl.col("ask_price") < 0), "quote prices must be >= 0"),
                ((pl.col("bid_size") < 0) | (pl.col("ask_size") < 0), "quote sizes must be >= 0"),
            ]
        session_start = pl.col("session").cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
        checks += [
            (pl.col("sequence") < 1, "sequence must be >= 1"),
            (pl.col("exchange_ts") > reference + self.max_clock_skew, "exchange time is in the future"),
            (
                (pl.col("exchange_ts") < session_start - _EARLY)
                | (pl.col("exchange_ts") > session_start + _LATE),
                "exchange time outside its trading session",
            ),
            (pl.col("symbol").str.len_bytes() == 0, "empty symbol"),
        ]
        if self.known_symbols:
            checks.append((~pl.col("symbol").is_in(sorted(self.known_symbols)), "unknown symbol"))
        expr = pl.lit(None, dtype=pl.String)
        for cond, reason in reversed(checks):
            expr = pl.when(cond.fill_null(True)).then(pl.lit(reason)).otherwise(expr)
        return frame.select(expr.alias("reason")).to_series()


def with_message_times(frame: pl.DataFrame, times_us: Any) -> pl.DataFrame:
    """``frame`` with ``MESSAGE_TS`` from per-row message times in µs (negative: none)."""
    series = pl.Series(MESSAGE_TS, times_us, dtype=pl.Int64)
    return frame.with_columns(
        pl.when(series >= 0).then(series).otherwise(None).cast(pl.Datetime("us", "UTC")).alias(MESSAGE_TS)
    )


def known_symbols(reference: Any) -> set[str] | None:
    """Symbols of the reference table (as the pipeline loads them), or None when there are none."""
    try:
        arrow = reference.scan(selected_fields=("symbol",)).to_arrow()
    except Exception:
        return None
    symbols = set(arrow.column("symbol").to_pylist()) if arrow.num_rows else set()
    return symbols or None
