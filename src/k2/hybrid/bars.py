"""OHLCV bars from tick rows in memory, with the query engine's definition (``k2.query.bars``).

Buckets are ``interval`` long from the exchange-local midnight (ASX: Australia/Sydney, SIM: UTC)
and restart each local day; open and close are the first and last trade by (exchange_ts,
sequence); VWAP = sum(price * size) / sum(size). Bars are built in two steps so that a live stream
can update them: ``partials`` aggregates any set of trades, ``combine`` merges partials of the same
buckets exactly (first/last by key, sums, extremes), ``finish`` turns them into bar rows. A bar's
``uncommitted`` column counts its trades that came from the Kafka tail, not yet from Iceberg.
"""

from __future__ import annotations

import polars as pl

from k2.query.params import exchange_timezone

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


def _local_to_utc(col: str, zone: str) -> pl.Expr:
    naive = pl.from_epoch(pl.col(col), time_unit="us")
    return naive.dt.replace_time_zone(zone, ambiguous="earliest", non_existent="null").dt.convert_time_zone(
        "UTC"
    )


def partials(trades: pl.DataFrame, interval_us: int) -> pl.DataFrame:
    """One partial bar per (exchange, symbol, local day, bucket) of ``trades`` (``PARTIAL_SCHEMA``).

    ``trades`` needs exchange, symbol, exchange_ts, sequence, price, size; a ``committed`` column,
    when present, feeds ``uncommitted``.
    """
    if trades.is_empty():
        return pl.DataFrame(schema=PARTIAL_SCHEMA)
    committed = pl.col("committed") if "committed" in trades.columns else pl.lit(True)
    out = []
    for exchange in trades.get_column("exchange").unique().sort().to_list():
        zone = exchange_timezone(exchange)
        local = pl.col("exchange_ts").dt.convert_time_zone(zone).dt.replace_time_zone(None).dt.epoch("us")
        sub = trades.filter(pl.col("exchange") == exchange).with_columns(local.alias("_local"))
        sub = sub.with_columns((pl.col("_local") - pl.col("_local") % _DAY).alias("day_us"))
        sub = sub.with_columns(
            (pl.col("day_us") + (pl.col("_local") - pl.col("day_us")) // interval_us * interval_us).alias(
                "bucket_us"
            )
        ).sort(["symbol", "bucket_us", "exchange_ts", "sequence"])
        agg = sub.group_by(list(PARTIAL_KEYS), maintain_order=True).agg(
            pl.col("exchange_ts").first().alias("first_ts"),
            pl.col("sequence").first().alias("first_seq"),
            pl.col("price").first().alias("open"),
            pl.col("exchange_ts").last().alias("last_ts"),
            pl.col("sequence").last().alias("last_seq"),
            pl.col("price").last().alias("close"),
            pl.col("price").max().alias("high"),
            pl.col("price").min().alias("low"),
            pl.col("size").cast(pl.Decimal(38, 6)).sum().alias("volume"),
            (pl.col("price").cast(pl.Float64) * pl.col("size").cast(pl.Float64)).sum().alias("notional"),
            pl.len().cast(pl.Int64).alias("trades"),
            (~committed).cast(pl.Int64).sum().alias("uncommitted"),
        )
        agg = agg.with_columns(
            pl.min_horizontal(pl.col("bucket_us") + interval_us, pl.col("day_us") + _DAY).alias("end_us")
        ).with_columns(
            _local_to_utc("bucket_us", zone).alias("start"), _local_to_utc("end_us", zone).alias("end")
        )
        out.append(agg.select([pl.col(c).cast(t) for c, t in PARTIAL_SCHEMA.items()]))
    return pl.concat(out) if len(out) > 1 else out[0]


def combine(parts: pl.DataFrame) -> pl.DataFrame:
    """Partials of the same buckets merged into one row each (exact, like ``k2.query.bars._MERGE``)."""
    if parts.is_empty():
        return parts
    last = pl.struct("last_ts", "last_seq")
    return (
        parts.sort([*PARTIAL_KEYS, "first_ts", "first_seq"])
        .group_by(list(PARTIAL_KEYS), maintain_order=True)
        .agg(
            pl.col("end_us").first(),
            pl.col("start").first(),
            pl.col("end").first(),
            pl.col("first_ts").first(),
            pl.col("first_seq").first(),
            pl.col("open").first(),
            pl.col("last_ts").sort_by(last).last(),
            pl.col("last_seq").sort_by(last).last(),
            pl.col("close").sort_by(last).last(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("volume").sum(),
            pl.col("notional").sum(),
            pl.col("trades").sum(),
            pl.col("uncommitted").sum(),
        )
        .select(list(PARTIAL_SCHEMA))
    )


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
