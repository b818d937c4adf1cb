"""Chapter 6, query: bars and VWAP, an as-of join, and the hybrid view over the uncommitted Kafka tail."""

from __future__ import annotations

from datetime import datetime, timedelta

from k2.cli.demo.chapters.store import show_offsets
from k2.cli.demo.stage import Stage
from k2.config import Settings

__all__ = ["query"]


def query(stage: Stage) -> None:
    _history(stage)
    _hybrid(stage)


def _history(stage: Stage) -> None:
    import polars as pl

    from k2.feeds.verify import table_frame
    from k2.query import QueryEngine, TimeRange

    settings = stage.settings
    trades = table_frame(settings, "trades").select("symbol", "exchange", "exchange_ts", "price", "size")
    symbol = trades.group_by("symbol").len().sort("len", descending=True)["symbol"][0]
    first = trades.filter(pl.col("symbol") == symbol)["exchange_ts"].min()
    assert isinstance(first, datetime)
    # whole 5-minute buckets: a bar always holds every trade of its bucket, so the window is aligned
    start = first.replace(minute=first.minute - first.minute % 5, second=0, microsecond=0)
    window = TimeRange(start, start + timedelta(hours=12))
    mine = trades.filter(
        (pl.col("symbol") == symbol) & pl.col("exchange_ts").is_between(window.start, window.end, "left")
    )
    engine = QueryEngine.from_settings(settings)
    try:
        bars = pl.from_arrow(engine.bars((symbol,), window, 300_000_000).table)
        joined = pl.from_arrow(engine.trades_with_quotes((symbol,), window, 5_000_000).table)
    finally:
        engine.close()
    assert isinstance(bars, pl.DataFrame) and isinstance(joined, pl.DataFrame)
    stage.say(
        f"5-minute bars of {symbol} from {window.start:%Y-%m-%d %H:%M} UTC: {bars.height} bars; the busiest:"
    )
    for bar in bars.sort("volume", descending=True).head(3).iter_rows(named=True):
        stage.say(f"  {bar['start']:%H:%M} open {float(bar['open']):.3f} high {float(bar['high']):.3f} "
                  f"low {float(bar['low']):.3f} close {float(bar['close']):.3f} volume {int(bar['volume']):,} "
                  f"VWAP {bar['vwap']:.4f}")  # fmt: skip
    price = pl.col("price").cast(pl.Float64)
    volume = int(mine["size"].sum())
    vwap = float(mine.select((price * pl.col("size")).sum())[0, 0]) / volume
    bar_volume = int(bars["volume"].sum())
    bar_vwap = float(bars.select((pl.col("vwap") * pl.col("volume")).sum())[0, 0]) / bar_volume
    stage.say(
        f"VWAP of the window: {bar_vwap:.6f} from the bars, {vwap:.6f} from the {mine.height:,} raw trades"
    )
    stage.check("bars add up to the raw trades", bar_volume == volume and abs(bar_vwap - vwap) <= 1e-9 * vwap,
                f"volume {bar_volume:,} = {volume:,}")  # fmt: skip

    matched = joined.filter(pl.col("quote_ts").is_not_null())
    for row in matched.head(1).iter_rows(named=True):
        stage.say(f"as-of join: trade {row['exchange_ts']:%H:%M:%S.%f} at {float(row['price']):.3f} met the quote "
                  f"{float(row['bid_price']):.3f}/{float(row['ask_price']):.3f} of {row['quote_ts']:%H:%M:%S.%f} "
                  f"({row['quote_age_us'] / 1000:.1f} ms before)")  # fmt: skip
    stage.say(f"  {matched.height:,} of {joined.height:,} trades had a quote at most 5 s old")
    ahead = matched.filter(pl.col("quote_ts") > pl.col("exchange_ts")).height
    stage.check("the as-of join keeps every trade, each quote at or before it", joined.height == mine.height
                and ahead == 0 and matched.height > 0, f"{joined.height:,} trades, {ahead} quotes from the future")  # fmt: skip


def _hybrid(stage: Stage) -> None:
    from k2.feeds.market import MarketConfig, symbol_names
    from k2.feeds.publish import FeedPublisher
    from k2.feeds.simulator import Simulator, SimulatorConfig
    from k2.hybrid import HybridEngine
    from k2.lake import ensure_tables, open_catalog
    from k2.query import QueryEngine, TimeRange
    from k2.stream.admin import ensure_topics
    from k2.stream.producer import TickProducer

    live, _ = stage.scratch("live")
    ensure_topics(live.kafka)
    ensure_tables(open_catalog(live), live.lake.namespace)
    symbols = symbol_names(4, 31)
    sim = Simulator(SimulatorConfig(MarketConfig(symbols=symbols, chunk_ticks=1_000), seed=31))
    feed = sim.deliveries()
    producer = TickProducer(live.kafka)
    publisher = FeedPublisher(producer, live.kafka)

    def publish(batches: int) -> set[str]:
        ids: set[str] = set()
        for _ in range(batches):
            delivery = next(feed)
            ids |= set(delivery.frame("trades")["message_id"])
            publisher.publish(delivery)
        producer.flush()
        return ids

    committed = publish(6)
    _ingest(live)
    stage.say(
        f"{len(committed):,} trades of {', '.join(symbols)} ingested and committed; the ingester stopped"
    )
    tail = publish(3)
    stage.say(f"{len(tail):,} more trades produced while no ingester runs: they are only in Kafka")

    engine = QueryEngine.from_settings(live)
    hybrid = HybridEngine(live, engine)
    window = TimeRange.parse("2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z", max_days=None)
    try:
        result = hybrid.ticks("trades", symbols, window, consistency="watermark")
    finally:
        hybrid.close()
        engine.close()
    b = result.boundary
    stage.say(f"hybrid answer: {result.history_rows:,} rows from Iceberg snapshot {b.snapshot_id} "
              f"+ {result.tail_rows:,} from the Kafka tail")  # fmt: skip
    stage.say(f"  boundary (the snapshot's own offsets): {show_offsets(b.offsets)}")
    ends = {tp: part.end for tp, part in result.tail.parts.items() if tp in b.offsets}
    stage.say(f"  tail read from there up to:           {show_offsets(ends)}")
    starts_at_boundary = all(part.start == b.offsets.get(tp, 0) for tp, part in result.tail.parts.items()
                             if tp[0] == live.kafka.topic("trades"))  # fmt: skip
    ids = result.rows["message_id"]
    stage.check(
        "history + tail = every trade, none twice, split exactly at the snapshot's offsets",
        starts_at_boundary
        and result.history_rows == len(committed)
        and result.tail_rows == len(tail)
        and ids.n_unique() == ids.len() == len(committed | tail)
        and set(ids) == committed | tail,
        f"{result.history_rows:,} + {result.tail_rows:,} = {ids.len():,}; {ids.len() - ids.n_unique()} twice",
    )
    _ingest(live)
    from k2.feeds.verify import table_frame

    later = table_frame(live, "trades")["message_id"]
    stage.check("once ingested, Iceberg holds exactly the rows the hybrid view showed",
                later.len() == ids.len() and set(later) == set(ids), f"{later.len():,} rows")  # fmt: skip


def _ingest(settings: Settings) -> None:
    """The pipeline, in this process, until idle for 2 s (what ``k2 ingest --idle-timeout 2`` does)."""
    from k2.pipeline import Pipeline
    from k2.pipeline.sequencing import sequence_checks

    Pipeline(settings, checks=sequence_checks(settings)).run(idle_timeout_s=2, max_seconds=120)
