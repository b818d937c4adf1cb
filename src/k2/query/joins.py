"""Trades with the prevailing quote: a DuckDB ASOF JOIN with a staleness tolerance.

For each trade, the prevailing quote is the last quote of the same symbol with
``quote.exchange_ts <= trade.exchange_ts``; among quotes sharing one timestamp the highest
sequence wins (the feed's order). If that quote is older than ``tolerance`` the quote columns are
null (a stale book, e.g. the previous session's close). ``mid`` and ``spread`` are null when the
book is one-sided (a side with size 0). ``quote_age_us`` is the trade time minus the quote time.

When both sides are in the hot-row cache the join runs in memory (``k2.query.prevailing``, the
same answer in a tenth of DuckDB's time for a small window); otherwise DuckDB runs the SQL below.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from k2.query.files import Prune
from k2.query.params import TimeRange, TimeTravel
from k2.query.prevailing import prevailing, supported
from k2.query.reader import LakeReader, Result, Scan
from k2.query.rows import hot_rows
from k2.query.runner import QUERY_SECONDS, normalise
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
    q_start = window.start_us - tolerance_us
    t_rows = hot_rows(reader, trades, symbols, window.start_us, window.end_us) if trades.files else None
    q_rows = hot_rows(reader, quotes, symbols, q_start, window.end_us) if quotes.files else None
    if t_rows is not None and q_rows is not None and supported(t_rows, q_rows):
        started = time.perf_counter()
        schema = _result_schema(reader, trades, quotes)
        out = prevailing(t_rows, q_rows, tolerance_us, reader.limits.max_rows + 1, schema)
        QUERY_SECONDS.labels("asof_memory").observe(time.perf_counter() - started)
    else:
        params: list[Any] = []
        tables: dict[str, pa.Table] = {}
        sql = _join_sql(
            reader, symbols, window, tolerance_us, params,
            lambda: _source(trades, t_rows, params, tables, "t"),
            lambda: _source(quotes, q_rows, params, tables, "q"),
        )  # fmt: skip
        out = reader.runner.table(
            "asof", sql, params, timeout_s=reader.limits.timeout_s, tables=tables,
            files=len(trades.files) + len(quotes.files),
        )  # fmt: skip
    return Result(
        reader.limits.check_rows(out, "trades-with-quotes"),
        {"trades": trades.snapshot_id, "quotes": quotes.snapshot_id},
    )


def _source(
    scan: Scan, rows: pa.Table | None, params: list[Any], tables: dict[str, pa.Table], alias: str
) -> str:
    """A FROM item: the hot rows when the cache had them, else the scan's Parquet files."""
    if rows is None:
        return scan.source(params, tables, alias)
    tables[f"_rows_{alias}"] = rows
    return f"_rows_{alias}"


_SCHEMAS: dict[tuple[int, int], tuple[pa.Schema, pa.Schema, pa.Schema]] = {}


def _result_schema(reader: LakeReader, trades: Scan, quotes: Scan) -> pa.Schema:
    """The join's result schema as DuckDB gives it (once per pair of table schemas).

    Keyed by identity: the reader hands out one schema object per table schema id.
    """
    key = (id(trades.schema), id(quotes.schema))
    found = _SCHEMAS.get(key)
    if found is not None and found[0] is trades.schema and found[1] is quotes.schema:
        return found[2]
    params: list[Any] = []
    tables = {
        "_rows_t": normalise(trades.schema.empty_table()),
        "_rows_q": normalise(quotes.schema.empty_table()),
    }
    window = TimeRange(from_us(0), from_us(1))
    sql = _join_sql(reader, ("_",), window, 1, params, lambda: "_rows_t", lambda: "_rows_q")
    schema = reader.runner.table(
        "asof_schema", sql, params, timeout_s=reader.limits.timeout_s, tables=tables
    ).schema
    _SCHEMAS[key] = (trades.schema, quotes.schema, schema)
    return schema


def _join_sql(
    reader: LakeReader,
    symbols: tuple[str, ...],
    window: TimeRange,
    tolerance_us: int,
    params: list[Any],
    trade_from: Callable[[], str],
    quote_from: Callable[[], str],
) -> str:
    """The join in SQL; each FROM item is made in turn, as its parameters bind in text order."""
    ph = placeholders(len(symbols))
    trade_src = trade_from()
    params += [*symbols, from_us(window.start_us), from_us(window.end_us)]
    quote_src = quote_from()
    params += [*symbols, from_us(window.start_us - tolerance_us), from_us(window.end_us)]
    params += [tolerance_us] * 6 + [reader.limits.max_rows + 1]
    fresh = "(j.quote_age_us <= ?)"
    return f"""
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
