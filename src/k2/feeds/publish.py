"""Hands deliveries to the producer: frames in batches, raw payloads in their place, dead letters.

Only the order *within a topic* matters to Kafka consumers (and, per key, within a partition), so
a delivery is sent as: for each tick kind, its frame cut at the positions of that kind's raw
payloads, frame slices and raw payloads alternating. A delivery without raw payloads is two
``send`` calls. ``ingest_ts`` is stamped here, once per batch: the moment K2 accepts the ticks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import numpy as np
import polars as pl

from k2.config import KafkaSettings
from k2.feeds.delivery import QUOTE, RAW, TRADE, Delivery
from k2.feeds.frames import stamp_ingest
from k2.stream.dlq import DeadLetter
from k2.stream.producer import topic_for

__all__ = ["FAULT_HEADER", "FeedCounts", "FeedPublisher", "TickSink"]

#: Header naming the simulator fault a raw payload stands for (for people reading the DLQ).
FAULT_HEADER = "k2.sim.fault"


class TickSink(Protocol):
    """What the publisher needs of :class:`k2.stream.producer.TickProducer`."""

    def send(self, kind: str, batch: pl.DataFrame) -> int: ...

    def send_raw(
        self, topic: str, key: bytes | None, value: bytes, headers: dict[str, str] | None = None
    ) -> None: ...

    def send_dead_letter(self, letter: DeadLetter) -> None: ...


@dataclass
class FeedCounts:
    """Messages handed to the producer, per destination."""

    trades: int = 0
    quotes: int = 0
    raw: int = 0
    dead_letters: int = 0
    reference: int = 0

    @property
    def ticks(self) -> int:
        return self.trades + self.quotes

    @property
    def total(self) -> int:
        return self.trades + self.quotes + self.raw + self.dead_letters + self.reference


def _now() -> datetime:
    return datetime.now(UTC)


class FeedPublisher:
    """Sends deliveries, dead letters and reference frames through a sink, counting them."""

    def __init__(self, sink: TickSink, kafka: KafkaSettings, *, clock: Callable[[], datetime] = _now) -> None:
        self._sink = sink
        self._kafka = kafka
        self._clock = clock
        self.counts = FeedCounts()

    def publish(self, delivery: Delivery) -> int:
        """Send one delivery; returns the number of messages sent.

        Raises:
            EncodeError: a frame does not fit its schema (nothing of that frame was sent).
            ProduceError: Kafka refused a message.
        """
        now = self._clock()
        raw_at = np.flatnonzero(delivery.order == RAW)
        for kind, code in (("trades", TRADE), ("quotes", QUOTE)):
            frame = delivery.frame(kind)
            if frame.height:
                frame = stamp_ingest(frame, now)
            rows_before = np.cumsum(delivery.order == code)
            done = 0
            for pos, message in zip(raw_at, delivery.raw, strict=True):
                if message.kind != kind:
                    continue
                cut = int(rows_before[pos])
                self._send_rows(kind, frame.slice(done, cut - done))
                done = cut
                headers = {FAULT_HEADER: message.reason} if message.reason else None
                self._sink.send_raw(topic_for(self._kafka, kind), message.key, message.value, headers)
                self.counts.raw += 1
            self._send_rows(kind, frame.slice(done))
        return len(delivery)

    def _send_rows(self, kind: str, frame: pl.DataFrame) -> None:
        if frame.height == 0:
            return
        sent = self._sink.send(kind, frame)
        if kind == "trades":
            self.counts.trades += sent
        else:
            self.counts.quotes += sent

    def dead_letters(self, letters: Iterable[DeadLetter]) -> int:
        """Send dead letters to the DLQ topic; returns how many.

        Raises:
            ProduceError: Kafka refused a message.
        """
        sent = 0
        for letter in letters:
            self._sink.send_dead_letter(letter)
            sent += 1
        self.counts.dead_letters += sent
        return sent

    def reference(self, kind: str, frame: pl.DataFrame) -> int:
        """Send reference rows (``instruments`` or ``corporate_actions``) to the reference topic.

        Raises:
            EncodeError: the frame does not fit the kind's schema.
            ProduceError: Kafka refused a message.
        """
        sent = self._sink.send(kind, frame) if frame.height else 0
        self.counts.reference += sent
        return sent
