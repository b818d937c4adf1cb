"""Reading and replaying the dead-letter queue.

A dead letter keeps the original bytes, so after a fix (a new schema version registered, a
reference symbol added) ``replay`` re-submits it to the topic it came from and the pipeline sees it
as a new message. Replay progress is the ``k2-dlq-replay`` consumer group's committed offset, so
the same letter is not replayed twice by two runs.

The DLQ is input like any other, so neither tool trusts it. A letter goes back only to one of
K2's own tick topics (never to whatever topic its header names: ``__consumer_offsets``, the DLQ
itself); a message without K2's headers is skipped and reported, not fatal to every later run;
and letters left out by a ``--reason`` filter stay pending: the committed offset stops before the
first of them, and the letters replayed beyond it are listed in the commit's metadata.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from confluent_kafka import Consumer, TopicPartition

from k2.config import KafkaSettings
from k2.observability.logging import get_logger
from k2.stream.dlq import DeadLetter
from k2.stream.errors import DeadLetterFormatError
from k2.stream.producer import TickProducer

__all__ = ["REPLAY_GROUP", "ReplayReport", "read_dead_letters", "replay_dead_letters", "replay_topics"]

log = get_logger(__name__)

REPLAY_GROUP = "k2-dlq-replay"
#: The logical topics a letter may be replayed to: the feeds' own.
_REPLAYABLE = ("trades", "quotes", "reference")
#: Marks K2's commit metadata (offsets replayed above the committed one); brokers keep 4 KiB.
_META_PREFIX = "k2r1:"
_META_MAX = 3500


@dataclass
class ReplayReport:
    """What one replay did.

    Attributes:
        replayed: letters re-submitted now.
        pending: letters left out by the filter, still to replay.
        refused: letters whose source names no K2 tick topic (source text, for the report).
        malformed: DLQ messages without K2's headers (where they sit, for the report).
    """

    replayed: int = 0
    pending: int = 0
    refused: list[str] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)


def replay_topics(kafka: KafkaSettings) -> frozenset[str]:
    """The topics ``replay`` may write to."""
    return frozenset(kafka.topic(name) for name in _REPLAYABLE)


def _source_topic(letter: DeadLetter) -> str | None:
    fields = dict(part.split("=", 1) for part in letter.source.split() if "=" in part)
    return fields.get("topic")


def read_dead_letters(
    kafka: KafkaSettings,
    *,
    limit: int | None = None,
    timeout_s: float = 5.0,
    on_malformed: Callable[[DeadLetterFormatError], None] | None = None,
) -> Iterator[DeadLetter]:
    """Every letter from the start of the DLQ topic to its current end (nothing is committed).

    Messages without K2's headers are skipped (``on_malformed`` hears of each).
    """
    topic = kafka.topic("dlq")
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": "k2-dlq-reader",
                         "enable.auto.commit": False, **kafka.client})  # fmt: skip
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s)
        if topic not in meta.topics or meta.topics[topic].error is not None:
            return
        parts = [TopicPartition(topic, p, 0) for p in meta.topics[topic].partitions]
        ends = {p.partition: consumer.get_watermark_offsets(p, timeout=timeout_s)[1] for p in parts}
        for p in parts:
            p.offset = consumer.get_watermark_offsets(p, timeout=timeout_s)[0]
        consumer.assign(parts)
        remaining = {p: e for p, e in ends.items() if e > 0}
        yielded = 0
        while remaining:
            msg = consumer.poll(timeout_s)
            if msg is None:
                break
            if msg.error() is not None:
                continue
            partition, offset = msg.partition(), msg.offset()
            if partition is not None and offset is not None and offset >= ends[partition] - 1:
                remaining.pop(partition, None)
            try:
                letter = DeadLetter.from_message(msg)
            except DeadLetterFormatError as exc:  # not K2's: say so, and go on with the rest
                log.warning("skipping a DLQ message without K2's headers", error=str(exc))
                if on_malformed is not None:
                    on_malformed(exc)
                continue
            yield letter
            yielded += 1
            if limit is not None and yielded >= limit:
                return
    finally:
        consumer.close()


def replay_dead_letters(
    kafka: KafkaSettings,
    *,
    accept: Callable[[DeadLetter], bool] = lambda _: True,
    timeout_s: float = 5.0,
) -> ReplayReport:
    """Re-submit letters not replayed before to their source topic, if it is one of K2's tick topics."""
    topic = kafka.topic("dlq")
    allowed = replay_topics(kafka)
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": REPLAY_GROUP,
                         "enable.auto.commit": False, "auto.offset.reset": "earliest", **kafka.client})  # fmt: skip
    producer = TickProducer(kafka)
    report = ReplayReport()
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s)
        if topic not in meta.topics:
            return report
        parts = [TopicPartition(topic, p) for p in meta.topics[topic].partitions]
        committed = consumer.committed(parts, timeout=timeout_s)
        ends = {p.partition: consumer.get_watermark_offsets(p, timeout=timeout_s)[1] for p in parts}
        starts = {c.partition: max(c.offset, 0) for c in committed}
        done = {c.partition: _parse_done(c.metadata) for c in committed}  # replayed above the offset
        todo = {p for p, start in starts.items() if start < ends[p]}
        if not todo:
            return report
        consumer.assign([TopicPartition(topic, c.partition, max(c.offset, 0)) for c in committed])
        first_pending: dict[int, int] = {}
        while todo:
            msg = consumer.poll(timeout_s)
            if msg is None:
                break
            if msg.error() is not None:
                continue
            partition, offset = msg.partition(), msg.offset()
            assert partition is not None and offset is not None  # a consumed message has both
            if offset >= ends[partition] - 1:
                todo.discard(partition)
            if offset in done[partition]:
                continue
            try:
                letter = DeadLetter.from_message(msg)
            except DeadLetterFormatError as exc:
                report.malformed.append(str(exc))
                done[partition].add(offset)
                continue
            source = _source_topic(letter)
            if source not in allowed:
                report.refused.append(letter.source[:200])
                done[partition].add(offset)
            elif accept(letter):
                producer.send_raw(source, letter.key, letter.value, {"k2.replayed-from": letter.source})
                report.replayed += 1
                done[partition].add(offset)
            else:
                report.pending += 1
                first_pending.setdefault(partition, offset)
        if producer.flush(30.0) == 0:
            offsets = _progress(topic, starts, ends, done, first_pending)
            if offsets:
                consumer.commit(offsets=offsets, asynchronous=False)
    finally:
        producer.close()
        consumer.close()
    if report.refused or report.malformed:
        log.warning("dead letters not replayed", refused=len(report.refused), malformed=len(report.malformed))
    return report


def _progress(
    topic: str,
    starts: dict[int, int],
    ends: dict[int, int],
    done: dict[int, set[int]],
    pending: dict[int, int],
) -> list[TopicPartition]:
    """Per partition: the first offset not handled, with the handled offsets above it as metadata."""
    out = []
    for partition, start in starts.items():
        handled = done[partition]
        low = start
        while low in handled:
            low += 1
        if partition in pending:
            low = min(low, pending[partition])
        above = sorted(o for o in handled if o > low and o < ends[partition])
        meta = _format_done(above)
        if len(meta) > _META_MAX:  # too scattered to list: stop at the first pending letter
            log.warning("dead-letter replay progress too scattered to record in full", partition=partition)
            meta = ""
        if low != start or meta:
            out.append(TopicPartition(topic, partition, low, metadata=meta))
    return out


def _format_done(offsets: list[int]) -> str:
    if not offsets:
        return ""
    runs: list[str] = []
    first = prev = offsets[0]
    for offset in [*offsets[1:], None]:
        if offset is not None and offset == prev + 1:
            prev = offset
            continue
        runs.append(f"{first}-{prev}" if prev != first else str(first))
        if offset is not None:
            first = prev = offset
    return _META_PREFIX + ",".join(runs)


def _parse_done(metadata: str | None) -> set[int]:
    """Offsets listed in K2's commit metadata (anything else there is ignored)."""
    if not metadata or not metadata.startswith(_META_PREFIX):
        return set()
    out: set[int] = set()
    for run in metadata[len(_META_PREFIX) :].split(","):
        first, _, last = run.partition("-")
        if first.isdigit() and (not last or last.isdigit()):
            lo, hi = int(first), int(last or first)
            if 0 <= hi - lo <= 100_000:
                out.update(range(lo, hi + 1))
    return out
