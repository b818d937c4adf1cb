"""OHLCV bars from tick rows in memory: the query engine's own SQL (``k2.query.bars``), run by DuckDB.

The bar is defined once, in ``k2.query.bars``: buckets ``interval`` long from the exchange-local
midnight (``k2.types.EXCHANGE_TIMEZONES``), restarting each local day; open and close the first
and last trade by (exchange_ts, sequence); VWAP = sum(price * size) / sum(size). Here the same
``partials_sql``, ``merge_sql`` and ``bounds_sql`` run over a Polars frame of tail and history
rows, so a live bar and a lake bar of the same trades are the same row. Bars are built in two steps
so that a live stream can update them: ``partials`` aggregates any set of trades, ``combine``
merges partials of the same buckets exactly, ``finish`` turns them into bar rows. A bar's
``uncommitted`` column counts its trades that came from the Kafka tail, not yet from Iceberg.
"""

from __future__ import annotations

import threading
from typing import Any

import duckdb
import polars as pl

from k2.query.bars import bounds_sql, merge_sql, partials_sql
from k2.query.params import exchange_timezone
from k2.query.runner import normalise

__all__ = ["BAR_SCHEMA", "PARTIAL_KEYS", "bars_from_trades", "combine", "finish", "partials"]

_DAY = 86_400_000_000
PARTIAL_KEYS = ("exchange", "symbol", "day_us", "bucket_us")
_DEC = pl.Decimal(18, 6)
_UTC = pl.Datetime("us", "UTC")
PARTIAL_SCHEMA: dict[str, pl.DataType] = {
    "exchange": pl.String(),
    "symbol": pl.String(),
    "day_us": pl.Int64(),
    "bucket_us": pl.Int64(),
    "end_us": pl.Int64(),
    "start": _UTC,
    "end": _UTC,
    "first_ts": _UTC,
    "first_seq": pl.Int64(),
    "open": _DEC,
    "last_ts": _UTC,
    "last_seq": pl.Int64(),
    "close": _DEC,
    "high": _DEC,
    "low": _DEC,
    "volume": pl.Decimal(38, 6),
    "notional": pl.Float64(),
    "trades": pl.Int64(),
    "uncommitted": pl.Int64(),
}
BAR_SCHEMA: dict[str, pl.DataType] = {
    "exchange": pl.String(),
    "symbol": pl.String(),
    "session": pl.Date(),
    "start": _UTC,
    "end": _UTC,
    "open": _DEC,
    "high": _DEC,
    "low": _DEC,
    "close": _DEC,
    "volume": pl.Decimal(38, 6),
    "vwap": pl.Float64(),
    "trades": pl.Int64(),
    "uncommitted": pl.Int64(),
}


_TRADE_COLUMNS = ("exchange", "symbol", "exchange_ts", "sequence", "price", "size")
_UNCOMMITTED = ", CAST(sum(uncommitted) AS BIGINT) AS uncommitted"
_local = threading.local()


def _run(sql: str, params: list[Any], frame: pl.DataFrame) -> pl.DataFrame:
    """``sql`` over ``frame`` (as ``_in``) in this thread's own small DuckDB database.

    A live stream runs this on every poll with a few rows: a connection kept per thread costs
    nothing per call, where a cursor of the query engine's runner costs more than the query.
    """
    con = getattr(_local, "con", None)
    if con is None:
        con = _local.con = duckdb.connect(":memory:", config={"threads": 1})
        con.execute("SET TimeZone = 'UTC'")
    con.register("_in", frame.to_arrow())
    try:
        out = normalise(con.sql(sql, params=params).to_arrow_table())
    finally:
        con.unregister("_in")
    result = pl.from_arrow(out)
    assert isinstance(result, pl.DataFrame)
    return result.select([pl.col(c).cast(t) for c, t in PARTIAL_SCHEMA.items()])


def _with_bounds(inner: str, inner_params: list[Any], interval_us: int, zone: str) -> tuple[str, list[Any]]:
    """``inner``'s rows with each bar's end_us, start and end (the lake's ``bounds_sql``)."""
    params: list[Any] = [interval_us]
    bounds = bounds_sql(interval_us, zone, params)
    sql = f"SELECT *, least(bucket_us + ?, day_us + {_DAY}) AS end_us, {bounds} FROM ({inner})"
    return sql, params + inner_params


def partials(trades: pl.DataFrame, interval_us: int) -> pl.DataFrame:
    """One partial bar per (exchange, symbol, local day, bucket) of ``trades`` (``PARTIAL_SCHEMA``).

    ``trades`` needs exchange, symbol, exchange_ts, sequence, price, size; a ``committed`` column,
    when present, feeds ``uncommitted``.
    """
    if trades.is_empty():
        return pl.DataFrame(schema=PARTIAL_SCHEMA)
    committed = pl.col("committed") if "committed" in trades.columns else pl.lit(True)
    frame = trades.select(*_TRADE_COLUMNS, (~committed).cast(pl.Int64).alias("uncommitted"))
    out = []
    # One query per exchange, its zone a constant: DuckDB converts a per-row zone (the lake's
    # CASE over exchanges) about 4x slower, which a live stream would pay on every poll.
    for exchange in frame.get_column("exchange").unique().sort().to_list():
        zone = exchange_timezone(exchange)
        inner_params: list[Any] = []
        inner = partials_sql("_in", interval_us, zone, inner_params, extra=_UNCOMMITTED)
        sql, params = _with_bounds(inner, inner_params, interval_us, zone)
        out.append(_run(sql, params, frame.filter(pl.col("exchange") == exchange)))
    return pl.concat(out) if len(out) > 1 else out[0]


def combine(parts: pl.DataFrame) -> pl.DataFrame:
    """Partials of the same buckets merged into one row each (the lake's ``merge_sql``)."""
    if parts.is_empty():
        return parts
    # a bucket's bounds are the same in each of its partials: carried, not recomputed
    carried = (
        f'{_UNCOMMITTED}, any_value(end_us) AS end_us, any_value(start) AS start, any_value("end") AS "end"'
    )
    return _run(merge_sql("_in", carried), [], parts)


def finish(parts: pl.DataFrame) -> pl.DataFrame:
    """Bar rows (``BAR_SCHEMA``) ordered by symbol, start, exchange."""
    if parts.is_empty():
        return pl.DataFrame(schema=BAR_SCHEMA)
    return (
        parts.with_columns(
            pl.from_epoch(pl.col("day_us"), time_unit="us").dt.date().alias("session"),
            (pl.col("notional") / pl.col("volume").cast(pl.Float64)).alias("vwap"),
        )
        .select(list(BAR_SCHEMA))
        .sort(["symbol", "start", "exchange"])
    )


def bars_from_trades(trades: pl.DataFrame, interval_us: int) -> pl.DataFrame:
    """Bars of every bucket ``trades`` touch (each bar complete only if ``trades`` holds its bucket)."""
    return finish(partials(trades, interval_us))
