"""The spill: deferred ticks, byte for byte, in Kafka until the back-fill takes them.

Each deferred tick is produced with its ORIGINAL payload (no re-encoding: what comes back is what
the feed sent) to ``<prefix>spill.trades`` or ``<prefix>spill.quotes``, key = symbol, with one
header naming where it was first read: ``k2.source`` = ``topic=k2.trades partition=1 offset=99``,
the header and format of dead letters. When it was deferred is the spill message's own timestamp.

**Co-partitioned.** A tick from source partition p goes to spill partition p (not to the key's hash
partition). With equal partition counts and the pipeline's ``range`` assignor, the consumer that
owns source partition p also owns spill partition p, so one symbol's live ticks and its back-fill
are never processed by two consumers at once: the sequence state of a symbol keeps one writer.
A symbol's deferred ticks stay in their original order inside that partition.

Durability is part of the commit protocol: the pipeline calls ``flush`` in step 1 of its commit,
beside the dead letters, and commits nothing while it returns a non-zero count, so the source
offsets that skip a deferred tick are never stored before the tick is safe in the spill. The
producer is idempotent with ``acks=all``. A message whose delivery fails is produced again by the
next ``flush`` instead of being lost with the producer's queue.

Deferral must cost less than processing, or shedding would add load. So the per-tick work is one
``produce`` call: header strings are built by Polars for the whole batch, successful deliveries
raise no Python callback (``delivery.report.only.error``), and the batch lists are only held (not
copied) until the next durable flush, so a failed message can be found again and re-produced.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import polars as pl
import structlog
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, KafkaError, KafkaException, Message, Producer

from k2.resilience.errors import SpillFormatError
from k2.resilience.metrics import DEFERRED, SPILLED
from k2.stream.producer import produce_when_room
from k2.types import TICK_KINDS

if TYPE_CHECKING:  # k2.config imports this package's settings: no runtime import back
    from k2.config import KafkaSettings

__all__ = [
    "HEADER_SOURCE",
    "KINDS",
    "SPILL_TOPICS",
    "Spill",
    "SpilledRecord",
    "ensure_spill_topics",
    "spill_topic",
]

log = structlog.get_logger(__name__)

#: Same header name and value format as dead letters (``k2.stream.dlq``).
HEADER_SOURCE = "k2.source"
KINDS = TICK_KINDS
#: Logical names of the spill topics, for ``ensure_topics``.
SPILL_TOPICS = tuple(f"spill.{kind}" for kind in KINDS)
_SOURCE = re.compile(r"^topic=(?P<topic>\S+) partition=(?P<partition>-?\d+) offset=(?P<offset>-?\d+)$")


def spill_topic(kafka: KafkaSettings, kind: str) -> str:
    """``<prefix>spill.<kind>``: create ``spill.trades`` / ``spill.quotes`` with ``ensure_topics`` too,
    with the same partition count as the source topics (co-partitioning)."""
    return kafka.topic(f"spill.{kind}")


@dataclass(frozen=True, slots=True)
class SpilledRecord:
    """One spilled tick read back: its payload and where it was first read from."""

    key: bytes | None
    value: bytes
    source_topic: str
    source_partition: int
    source_offset: int
    spilled_at: datetime | None

    @classmethod
    def from_message(cls, msg: Message) -> SpilledRecord:
        """Parse a consumed spill message.

        Raises:
            SpillFormatError: the message has no readable ``k2.source`` header.
        """
        raw = dict(_pairs(msg)).get(HEADER_SOURCE)
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else (raw or "")
        match = _SOURCE.match(text)
        if match is None:
            raise SpillFormatError(msg.topic() or "", msg.partition() or 0, msg.offset() or 0, text)
        kind, ms = msg.timestamp()
        key, value = msg.key(), msg.value()
        return cls(
            key=key.encode() if isinstance(key, str) else key,
            value=(value.encode() if isinstance(value, str) else value) or b"",
            source_topic=match["topic"],
            source_partition=int(match["partition"]),
            source_offset=int(match["offset"]),
            spilled_at=None if kind == TIMESTAMP_NOT_AVAILABLE else datetime.fromtimestamp(ms / 1000, UTC),
        )


def ensure_spill_topics(kafka: KafkaSettings, *, timeout_s: float = 30.0) -> list[str]:
    """Create the missing spill topics, each with exactly its source topic's partition count.

    Co-partitioning needs equal counts; a source topic created elsewhere with another count than
    ``kafka.partitions`` would otherwise get a spill topic that the range assignor splits differently.
    A missing source topic is created first with the configured layout.

    Raises:
        TopicAdminError: the cluster is unreachable or refused to create a topic.
    """
    from k2.stream.admin import admin_client, ensure_topics

    ensure_topics(kafka, names=KINDS, timeout_s=timeout_s)
    metadata = admin_client(kafka).list_topics(timeout=timeout_s).topics
    created: list[str] = []
    for kind, name in zip(KINDS, SPILL_TOPICS, strict=True):
        source = metadata.get(kafka.topic(kind))
        count = len(source.partitions) if source is not None and source.partitions else kafka.partitions
        created += ensure_topics(
            kafka.model_copy(update={"partitions": count}), names=(name,), timeout_s=timeout_s
        )
    return created


def _pairs(msg: Message) -> list[tuple[str, Any]]:
    raw = msg.headers() or []
    return list(raw.items()) if isinstance(raw, dict) else list(raw)


@dataclass(frozen=True, slots=True)
class _Batch:
    """References to one ``send``'s lists, held until the spill is durable (nothing is copied)."""

    topic: str
    keys: list[str]
    partitions: list[int]
    values: Sequence[bytes]
    sources: list[bytes]


class Spill:
    """Producer of the spill topics.

    Args:
        kafka: the ``kafka`` settings section (bootstrap servers, topic prefix, client options).
        config: extra librdkafka options for this producer only (tests shorten timeouts with it).
    """

    def __init__(self, kafka: KafkaSettings, config: dict[str, Any] | None = None) -> None:
        self.kafka = kafka
        self.topics = {kind: spill_topic(kafka, kind) for kind in KINDS}
        self._producer = Producer(
            {
                "bootstrap.servers": kafka.bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "compression.type": "lz4",
                "queue.buffering.max.messages": 1_000_000,
                **kafka.client,
                **(config or {}),
                "delivery.report.only.error": True,
                "on_delivery": self._on_error,
            }
        )
        self._closed: int | None = None  # what close() left undelivered, once closed
        # send() runs on the consumer thread while flush() runs on the commit worker: the lock guards
        # the bookkeeping (never a produce or a flush), so a send racing a flush is not forgotten
        self._lock = threading.Lock()
        self.durable = {kind: 0 for kind in KINDS}  # ticks confirmed durable, for status displays
        self.deferred = {kind: 0 for kind in KINDS}  # ticks handed to send(), for status displays
        self._held: list[_Batch] = []  # every send since the last durable flush
        self._outstanding: dict[str, int] = {}  # ticks per kind not yet confirmed durable
        self._failed: list[tuple[str, Any, Any]] = []  # (topic, key, value) whose delivery failed
        # produce() refused (e.g. unknown topic or partition): (topic, key, partition, value, source)
        self._refused: list[tuple[str, str, int, bytes, bytes]] = []

    def send(
        self,
        kind: str,
        source_topic: str,
        deferred: pl.DataFrame,
        payloads: Sequence[bytes],
        floor: Mapping[int, int] | None = None,
    ) -> int:
        """Produce deferred ticks; returns how many. Durable only once ``flush`` has returned 0.

        Args:
            kind: "trades" or "quotes".
            source_topic: the topic the ticks were read from.
            deferred: the deferred rows, with ``symbol``, ``_partition`` and ``_offset`` columns.
            payloads: the original Kafka message values, aligned with ``deferred``'s rows; the
                spill keeps a reference to the sequence until the next durable flush.
            floor: per source partition, the offset the tick table already covers. Rows below it
                were deferred (and spilled) by a commit that went through before a crash: a replay
                must not spill them twice. Pass ``TableSink.watermark`` of each partition.

        Raises:
            ValueError: ``payloads`` and ``deferred`` differ in length, or ``kind`` is unknown.
        """
        if len(payloads) != deferred.height:
            raise ValueError(f"{len(payloads)} payloads for {deferred.height} deferred rows")
        if kind not in self.topics:
            raise ValueError(f"unknown tick kind {kind!r}; expected one of {KINDS}")
        if floor and any(mark >= 0 for mark in floor.values()) and deferred.height:
            marks = pl.col("_partition").replace_strict(dict(floor), default=-1, return_dtype=pl.Int64)
            fresh = deferred.select(pl.col("_offset") >= marks).to_series()
            if not fresh.all():
                positions = fresh.arg_true().to_list()
                deferred = deferred.filter(fresh)
                payloads = [payloads[i] for i in positions]
        if not deferred.height:
            return 0
        topic = self.topics[kind]
        lineage = deferred.select(
            pl.col("symbol"),
            pl.col("_partition"),
            pl.format("topic={} partition={} offset={}", pl.lit(source_topic), "_partition", "_offset").cast(
                pl.Binary  # bytes headers cost the client less than str
            ),
        )
        keys = lineage.to_series(0).to_list()
        partitions = lineage.to_series(1).to_list()
        sources = lineage.to_series(2).to_list()
        with self._lock:
            self._held.append(_Batch(topic, keys, partitions, payloads, sources))
            self._outstanding[kind] = self._outstanding.get(kind, 0) + deferred.height
            self.deferred[kind] += deferred.height
        produce = self._producer.produce
        for key, partition, value, source in zip(keys, partitions, payloads, sources, strict=True):
            try:
                produce(topic, value, key, partition, headers=[(HEADER_SOURCE, source)])
            except (BufferError, KafkaException):
                self._produce_one(topic, key, partition, value, source)
        self._producer.poll(0)
        DEFERRED.labels(kind).inc(deferred.height)
        return deferred.height

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for delivery; returns how many deferred ticks are NOT yet durable (0: commit may go on).

        Ticks whose delivery failed, or that the producer refused, are produced again first, so a
        retried flush can succeed without the pipeline re-reading anything.
        """
        with self._lock:  # what was sent before this flush began; later sends wait for the next one
            held = len(self._held)
            outstanding = dict(self._outstanding)
        self._retry()
        remaining = self._producer.flush(timeout_s)
        undelivered = remaining + len(self._failed) + len(self._refused)
        if undelivered:
            log.warning(
                "spill not durable yet", in_queue=remaining, failed=len(self._failed) + len(self._refused)
            )
            return undelivered
        with self._lock:
            for kind, n in outstanding.items():
                SPILLED.labels(kind).inc(n)
                self.durable[kind] += n
                left = self._outstanding.get(kind, 0) - n
                if left > 0:
                    self._outstanding[kind] = left
                else:
                    self._outstanding.pop(kind, None)
            del self._held[:held]
        return 0

    def close(self, timeout_s: float = 30.0) -> int:
        """Flush, then release the producer; returns what could still not be delivered.

        Nothing undelivered is lost: the pipeline did not commit past it, so a restart re-reads
        and defers it again. The librdkafka handle (threads, sockets) goes now, not whenever the
        garbage collector gets to it: a closed pipeline's spill producer kept reconnecting to a
        stopped broker for 90 s in ``make bench``. Calling it twice is harmless.
        """
        if self._closed is not None:
            return self._closed
        undelivered = self.flush(timeout_s)
        if undelivered:
            self._producer.purge()  # librdkafka's close would wait for what the broker never took
            self._producer.flush(1.0)
        self._producer.close()
        self._closed = undelivered
        return undelivered

    def _retry(self) -> None:
        refused, self._refused = self._refused, []
        for topic, key, partition, value, source in refused:
            self._produce_one(topic, key, partition, value, source)
        if not self._failed:
            return
        # the delivery report has no headers: find each failed message's lineage in the held batches
        wanted: dict[tuple[str, bytes], int] = {}
        for topic, _key, value in self._failed:
            k = (topic, value if isinstance(value, bytes) else bytes(value or b""))
            wanted[k] = wanted.get(k, 0) + 1
        self._failed = []
        with self._lock:
            held = list(self._held)
        for batch in held:
            rows = zip(batch.keys, batch.partitions, batch.values, batch.sources, strict=True)
            for key, partition, value, source in rows:
                n = wanted.get((batch.topic, value))
                if n:
                    wanted[(batch.topic, value)] = n - 1
                    self._produce_one(batch.topic, key, partition, value, source)
        lost = sum(wanted.values())
        if lost:  # cannot happen while batches are held until durable; say so loudly if it does
            log.error("failed spill messages not found among held batches", count=lost)

    def _produce_one(self, topic: str, key: str, partition: int, value: bytes, source: bytes) -> None:
        """Produce one message; a full local queue waits, a refusal keeps it for the next flush."""
        try:
            produce_when_room(self._producer, topic, value, key, partition, headers=[(HEADER_SOURCE, source)])
        except KafkaException as exc:  # the spill topic (or that partition) does not exist (yet)
            if not self._refused:
                log.warning(
                    "spill produce refused; kept for the next flush",
                    topic=topic,
                    partition=partition,
                    error=str(exc),
                )
            self._refused.append((topic, key, partition, value, source))

    def _on_error(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:  # only failures are reported; be safe if a client reports more
            return
        if not self._failed:
            log.warning("spill delivery failed; kept for the next flush", topic=msg.topic(), error=str(err))
        self._failed.append((msg.topic() or "", msg.key(), msg.value()))
