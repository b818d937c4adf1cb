"""Reading and replaying the dead-letter queue.

A dead letter keeps the original bytes, so after a fix (a new schema version registered, a
reference symbol added) ``replay`` re-submits it to the topic it came from and the pipeline sees it
as a new message. Replay progress is the ``k2-dlq-replay`` consumer group's committed offset, so
the same letter is not replayed twice by two runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from confluent_kafka import Consumer, TopicPartition

from k2.config import KafkaSettings
from k2.stream.dlq import DeadLetter
from k2.stream.producer import TickProducer

__all__ = ["REPLAY_GROUP", "read_dead_letters", "replay_dead_letters"]

REPLAY_GROUP = "k2-dlq-replay"


def _source_topic(letter: DeadLetter) -> str | None:
    fields = dict(part.split("=", 1) for part in letter.source.split() if "=" in part)
    return fields.get("topic")


def read_dead_letters(
    kafka: KafkaSettings, *, limit: int | None = None, timeout_s: float = 5.0
) -> Iterator[DeadLetter]:
    """Every letter from the start of the DLQ topic to its current end (nothing is committed)."""
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
            if msg.offset() >= ends[msg.partition()] - 1:
                remaining.pop(msg.partition(), None)
            yield DeadLetter.from_message(msg)
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
) -> tuple[int, int]:
    """Re-submit letters not replayed before to their source topic. Returns (replayed, skipped)."""
    topic = kafka.topic("dlq")
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": REPLAY_GROUP,
                         "enable.auto.commit": False, "auto.offset.reset": "earliest", **kafka.client})  # fmt: skip
    producer = TickProducer(kafka)
    replayed = skipped = 0
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s)
        if topic not in meta.topics:
            return 0, 0
        parts = [TopicPartition(topic, p) for p in meta.topics[topic].partitions]
        committed = consumer.committed(parts, timeout=timeout_s)
        ends = {p.partition: consumer.get_watermark_offsets(p, timeout=timeout_s)[1] for p in parts}
        todo = {c.partition for c in committed if (c.offset if c.offset >= 0 else 0) < ends[c.partition]}
        if not todo:
            return 0, 0
        consumer.assign([c for c in committed])
        last: dict[int, int] = {}
        while todo:
            msg = consumer.poll(timeout_s)
            if msg is None:
                break
            if msg.error() is not None:
                continue
            letter = DeadLetter.from_message(msg)
            source = _source_topic(letter)
            if source and accept(letter):
                producer.send_raw(source, letter.key, letter.value, {"k2.replayed-from": letter.source})
                replayed += 1
            else:
                skipped += 1
            last[msg.partition()] = msg.offset()
            if msg.offset() >= ends[msg.partition()] - 1:
                todo.discard(msg.partition())
        if producer.flush(30.0) == 0 and last:
            consumer.commit(
                offsets=[TopicPartition(topic, p, o + 1) for p, o in last.items()], asynchronous=False
            )
    finally:
        producer.close()
        consumer.close()
    return replayed, skipped
