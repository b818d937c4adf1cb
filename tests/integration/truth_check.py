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
from k2.lake import open_catalog
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
    t = open_catalog(settings).load_table(f"{settings.lake.namespace}.{name}")
    frame = pl.from_arrow(t.scan().to_arrow())
    assert isinstance(frame, pl.DataFrame)
    return frame


def assert_matches_truth(settings: Settings, truth: dict[str, Any]) -> None:
    """Every unique tick once; the gap table equals the truth's gaps (and their recoveries) exactly.

    A hole counts once the stream moved past it by the reorder window, or its session ended.
    """
    gaps = table(settings, "sequence_gaps")
    window = settings.state.reorder_window
    for kind in ("trades", "quotes"):
        k = truth["kinds"][kind]
        rows = table(settings, kind)
        assert rows.height == len(k["sent_ids"]), kind
        assert rows["message_id"].n_unique() == rows.height, kind
        assert set(rows["message_id"]) == set(k["sent_ids"]), kind
        last = {(s["symbol"], s["session"]): s["last_sequence"] for s in k["streams"]}
        later = {(s["symbol"], s["session"]) for s in k["streams"]}
        sessions: dict[str, list[str]] = {}
        for sym, ses in later:
            sessions.setdefault(sym, []).append(ses)

        due = [g for g in k["gaps"] if _due(g, sessions, last, window)]
        want = {(g["symbol"], g["session"], g["first"], g["last"]) for g in due}
        want_filled = {(g["symbol"], g["session"], g["first"], g["last"]) for g in due if g["filled"]}
        mine = gaps.filter(pl.col("kind") == kind)

        def keyset(frame: pl.DataFrame) -> set[tuple[Any, ...]]:
            return {
                (r["symbol"], r["session"].isoformat(), r["first_missing"], r["last_missing"])
                for r in frame.to_dicts()
            }

        opened = mine.filter(pl.col("event") == "opened")
        assert opened.height == len(keyset(opened)), f"{kind}: a gap was recorded twice"
        assert keyset(opened) == want, kind
        assert keyset(mine.filter(pl.col("event") == "recovered")) == want_filled, kind


def _due(g: dict[str, Any], sessions: dict[str, list[str]], last: dict[Any, int], window: int) -> bool:
    ended = max(sessions[g["symbol"]]) > g["session"]
    return ended or last[(g["symbol"], g["session"])] - g["last"] > window
