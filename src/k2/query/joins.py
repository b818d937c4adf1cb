"""Trades with the prevailing quote: a DuckDB ASOF JOIN with a staleness tolerance.

For each trade, the prevailing quote is the last quote of the same symbol with
``quote.exchange_ts <= trade.exchange_ts``; among quotes sharing one timestamp the highest
sequence wins (the feed's order). If that quote is older than ``tolerance`` the quote columns are
null (a stale book, e.g. the previous session's close). ``mid`` and ``spread`` are null when the
book is one-sided (a side with size 0). ``quote_age_us`` is the trade time minus the quote time.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from k2.query.files import Prune
from k2.query.params import TimeRange, TimeTravel
from k2.query.reader import LakeReader, Result
from k2.query.rows import source_rows
from k2.query.sql import columns, from_us, placeholders

__all__ = ["trades_with_quotes"]


def trades_with_quotes(
    reader: LakeReader,
    symbols: tuple[str, ...],
    window: TimeRange,
    tolerance_us: int,
    *,
    travel: TimeTravel = TimeTravel(),
) -> Result:
    """Each trade in the window with bid, ask, mid, spread and age of the prevailing quote.

    Raises:
        CapExceededError: more trades than ``max_rows``.
        SnapshotNotFoundError, QueryTimeoutError: see ``k2.query.errors``.
    """
    trades = reader.scan("trades", travel, Prune(symbols, window.start_us, window.end_us))
    quote_travel = reader.travel_for_second_table(trades, travel)
    quotes = reader.scan(
        "quotes", quote_travel, Prune(symbols, window.start_us - tolerance_us, window.end_us)
    )
    params: list[Any] = []
    tables: dict[str, pa.Table] = {}
    ph = placeholders(len(symbols))
    trade_src = source_rows(reader, trades, symbols, window.start_us, window.end_us, params, tables, "t")
    params += [*symbols, from_us(window.start_us), from_us(window.end_us)]
    quote_src = source_rows(
        reader, quotes, symbols, window.start_us - tolerance_us, window.end_us, params, tables, "q"
    )
    params += [*symbols, from_us(window.start_us - tolerance_us), from_us(window.end_us)]
    params += [tolerance_us] * 6 + [reader.limits.max_rows + 1]
    fresh = "(j.quote_age_us <= ?)"
    sql = f"""
        WITH t AS (
            SELECT {columns("trades", lineage=False)} FROM {trade_src}
            WHERE symbol IN ({ph}) AND exchange_ts >= ? AND exchange_ts < ?
        ), q AS (
            SELECT symbol, exchange_ts,
                   max(sequence) AS sequence,
                   arg_max(bid_price, sequence) AS bid_price, arg_max(ask_price, sequence) AS ask_price,
                   arg_max(bid_size, sequence) AS bid_size, arg_max(ask_size, sequence) AS ask_size
            FROM {quote_src}
            WHERE symbol IN ({ph}) AND exchange_ts >= ? AND exchange_ts < ?
            GROUP BY symbol, exchange_ts
        ), j AS (
            SELECT t.*, q.exchange_ts AS quote_ts, q.sequence AS quote_sequence,
                   q.bid_price, q.ask_price, q.bid_size, q.ask_size,
                   epoch_us(t.exchange_ts) - epoch_us(q.exchange_ts) AS quote_age_us
            FROM t ASOF LEFT JOIN q ON t.symbol = q.symbol AND t.exchange_ts >= q.exchange_ts
        )
        SELECT {columns("trades", lineage=False, prefix="j.")},
               CASE WHEN {fresh} THEN j.quote_ts END AS quote_ts,
               CASE WHEN {fresh} THEN j.bid_price END AS bid_price,
               CASE WHEN {fresh} THEN j.ask_price END AS ask_price,
               CASE WHEN {fresh} AND j.bid_size > 0 AND j.ask_size > 0
                    THEN (CAST(j.bid_price AS DOUBLE) + CAST(j.ask_price AS DOUBLE)) / 2 END AS mid,
               CASE WHEN {fresh} AND j.bid_size > 0 AND j.ask_size > 0
                    THEN j.ask_price - j.bid_price END AS spread,
               CASE WHEN {fresh} THEN j.quote_age_us END AS quote_age_us
        FROM j
        ORDER BY j.exchange_ts, j.symbol, j.sequence
        LIMIT ?
    """
    out = reader.runner.table(
        "asof", sql, params, timeout_s=reader.limits.timeout_s, tables=tables,
        files=len(trades.files) + len(quotes.files),
    )  # fmt: skip
    return Result(
        reader.limits.check_rows(out, "trades-with-quotes"),
        {"trades": trades.snapshot_id, "quotes": quotes.snapshot_id},
    )
