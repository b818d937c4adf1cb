"""Feeding the simulator into the real broker and comparing Iceberg with its ground truth."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import polars as pl

from k2.config import Settings
from k2.feeds.delivery import Delivery
from k2.feeds.faults import FaultConfig
from k2.feeds.market import MarketConfig, symbol_names
from k2.feeds.publish import FeedPublisher
from k2.feeds.simulator import Simulator, SimulatorConfig
from k2.feeds.verify import compare_with_truth, table_frame
from k2.stream.admin import ensure_topics
from k2.stream.producer import TickProducer

#: The issue's ground-truth mix: 1 % duplicates, 0.1 % gaps, reordering within 50 ticks, late fills
#: for half of the gaps; a slow tick rate makes every symbol span several sessions (a reset per day).
FAULTS = FaultConfig(gap_rate=0.001, dup_rate=0.01, reorder_rate=0.01, reorder_window=50,
                     late_fill_fraction=0.5, malformed_rate=0.0002)  # fmt: skip
#: Between the feed's reorder bound (50) and how late its late fills come (>= 61).
K2_WINDOW = 55


def simulator(count: int, *, seed: int = 11, symbols: int = 10, chunk: int = 5_000) -> Simulator:
    market = MarketConfig(symbols=symbol_names(symbols, seed), rate_per_symbol=0.2, chunk_ticks=chunk)
    sim = Simulator(SimulatorConfig(market, FAULTS, seed=seed))
    sim.count = count  # type: ignore[attr-defined]
    return sim


def deliveries(sim: Simulator) -> Iterator[Delivery]:
    return sim.deliveries(count=sim.count)  # type: ignore[attr-defined]


def publish(settings: Settings, batches: list[Delivery] | Iterator[Delivery]) -> None:
    ensure_topics(settings.kafka)
    producer = TickProducer(settings.kafka)
    publisher = FeedPublisher(producer, settings.kafka)
    for delivery in batches:
        publisher.publish(delivery)
    producer.close()


def table(settings: Settings, name: str) -> pl.DataFrame:
    return table_frame(settings, name)


def assert_matches_truth(settings: Settings, truth: dict[str, Any], *, deferred: bool = False) -> None:
    """Every unique tick once; the gap table equals the truth's gaps (and their recoveries) exactly.

    The comparison itself is product code (``k2.feeds.verify``), shared with ``k2 load-test``.
    """
    report = compare_with_truth(settings, truth, deferred=deferred)
    assert report.ok, "\n".join(report.problems)
