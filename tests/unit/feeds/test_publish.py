"""The publisher: frames in batches, raw payloads in their place within their topic, counts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import polars as pl

from k2.config import KafkaSettings
from k2.feeds.faults import FaultConfig
from k2.feeds.market import MarketConfig
from k2.feeds.publish import FAULT_HEADER, FeedPublisher
from k2.feeds.simulator import Simulator, SimulatorConfig
from k2.stream.dlq import DeadLetter


class FakeSink:
    """Records what a TickProducer would have been asked to send, in order, per topic."""

    def __init__(self) -> None:
        self.topics: dict[str, list[Any]] = {}
        self.frames: list[pl.DataFrame] = []

    def send(self, kind: str, batch: pl.DataFrame) -> int:
        topic = {"trades": "k2.trades", "quotes": "k2.quotes"}.get(kind, "k2.reference")
        self.topics.setdefault(topic, []).extend(
            batch["message_id"].to_list() if "message_id" in batch.columns else [None] * batch.height
        )
        self.frames.append(batch)
        return batch.height

    def send_raw(
        self, topic: str, key: bytes | None, value: bytes, headers: dict[str, str] | None = None
    ) -> None:
        self.topics.setdefault(topic, []).append(("raw", key, value, headers))

    def send_dead_letter(self, letter: DeadLetter) -> None:
        self.topics.setdefault("k2.dlq", []).append(letter)


def test_each_topic_gets_its_messages_in_delivery_order() -> None:
    market = MarketConfig(symbols=("AAA", "BBB", "CCC"), chunk_ticks=2_000)
    sim = Simulator(SimulatorConfig(market, FaultConfig(malformed_rate=0.01, dup_rate=0.01), seed=4))
    delivery = next(sim.deliveries(count=2_000))
    sink = FakeSink()
    at = datetime(2030, 1, 1, tzinfo=UTC)
    publisher = FeedPublisher(sink, KafkaSettings(), clock=lambda: at)
    assert publisher.publish(delivery) == len(delivery)
    for kind in ("trades", "quotes"):
        expected: list[Any] = []
        rows = iter(delivery.frame(kind)["message_id"].to_list())
        raws = iter(delivery.raw)
        for code in delivery.order:
            if code == ("trades", "quotes").index(kind):
                expected.append(next(rows))
            elif code == 2:
                message = next(raws)
                if message.kind == kind:
                    expected.append(("raw", message.key, message.value, {FAULT_HEADER: message.reason}))
        assert sink.topics[f"k2.{kind}"] == expected
    assert all((f["ingest_ts"] == at).all() for f in sink.frames)
    counts = publisher.counts
    assert counts.raw == len(delivery.raw) > 0
    assert counts.trades + counts.quotes + counts.raw == len(delivery) == counts.total


def test_dead_letters_and_reference_are_counted() -> None:
    sink = FakeSink()
    publisher = FeedPublisher(sink, KafkaSettings())
    letters = [DeadLetter(b"x", "bad", "file=f line=1"), DeadLetter(b"y", "bad", "file=f line=2")]
    assert publisher.dead_letters(letters) == 2
    assert publisher.reference("instruments", pl.DataFrame({"symbol": ["A"]})) == 1
    assert sink.topics["k2.dlq"] == letters
    assert (publisher.counts.dead_letters, publisher.counts.reference, publisher.counts.total) == (2, 1, 3)
