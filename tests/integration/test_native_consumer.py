"""K2's native consumer (native/, Rust over librdkafka) against a real broker, beside confluent-kafka.

`make` builds the extension; a checkout without it fails here rather than skipping, because the
pipeline would then silently read with the fallback.
"""

from __future__ import annotations

import gc
import threading
import time
import uuid
import weakref
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from k2.config import Settings
from k2.pipeline import native
from k2.pipeline.consumer import FETCH
from k2.pipeline.native import NativeBatch, NativeConsumer
from k2.stream.admin import ensure_topics
from k2.stream.producer import TickProducer

N = 3_000


def _config(settings: Settings, group: str | None = None) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka.bootstrap,
        "group.id": group or uuid.uuid4().hex,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "partition.assignment.strategy": "range",
        **FETCH,
    }


def _produce(settings: Settings, topic: str, n: int, first: int = 0) -> None:
    producer = TickProducer(settings.kafka)
    for i in range(first, first + n):
        value = b"" if i % 500 == 0 else b"value-%d" % i  # an empty value now and then
        producer.send_raw(topic, None if i % 3 == 0 else b"k%d" % (i % 7), value, partition=i % 2)
    producer.close()


Row = tuple[str, int, int, bytes, bytes, int]


def _native_rows(batch: NativeBatch) -> list[Row]:
    out: list[Row] = []
    for topic in batch.topics:
        rows = batch.rows_of(topic)
        at = range(batch.messages) if rows is None else rows.tolist()
        values = batch.payloads(rows)
        times = batch.times_us(rows)
        for j, i in enumerate(at):
            out.append((topic, int(batch.partitions[i]), int(batch.offsets[i]), batch.key(i), values[j],
                        int(times[j]) // 1000))  # fmt: skip
    return out


def _read_native(consumer: NativeConsumer, n: int, timeout_s: float = 60.0) -> list[Row]:
    rows: list[Row] = []
    deadline = time.monotonic() + timeout_s
    while len(rows) < n and time.monotonic() < deadline:
        batch = consumer.consume(1_000, 0.5)
        if isinstance(batch, NativeBatch):
            assert not batch.errors, batch.errors
            rows += _native_rows(batch)
    return rows


def test_the_extension_is_built() -> None:
    assert native.available(), "run `make setup`: it builds native/ with cargo"
    assert native.native_version()


def test_it_reads_what_confluent_kafka_reads_and_follows_the_group(settings: Settings) -> None:
    topic = settings.kafka.topic("trades")
    ensure_topics(settings.kafka, ["trades"])
    _produce(settings, topic, N)

    reference = Consumer(_config(settings))
    reference.subscribe([topic])
    expected: list[Row] = []
    deadline = time.monotonic() + 60
    while len(expected) < N and time.monotonic() < deadline:
        for m in reference.consume(1_000, 0.5):
            assert m.error() is None
            expected.append(
                (topic, m.partition(), m.offset(), m.key() or b"", m.value() or b"", m.timestamp()[1])
            )
    reference.close()

    events: list[tuple[str, list[tuple[str, int, int]]]] = []

    def on_assign(consumer: NativeConsumer, partitions: list[TopicPartition]) -> None:
        events.append(("assign", [(p.topic, p.partition, p.offset) for p in partitions]))
        for p in partitions:
            p.offset = 1 if p.partition == 1 else p.offset  # the runner's way: start where the lake says
        consumer.assign(partitions)

    def on_revoke(consumer: NativeConsumer, partitions: list[TopicPartition]) -> None:
        events.append(("revoke", [(p.topic, p.partition, p.offset) for p in partitions]))
        consumer.unassign()

    group = uuid.uuid4().hex
    consumer = NativeConsumer(_config(settings, group))
    consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
    got = _read_native(consumer, N - 1)
    # every message of confluent-kafka's read but offset 0 of partition 1, which the callback skipped
    assert sorted(got) == sorted(r for r in expected if (r[1], r[2]) != (1, 0))
    partitions = list(range(settings.kafka.partitions))
    assert events[0][0] == "assign" and sorted(p for _, p, _ in events[0][1]) == partitions
    assert sorted(tp.partition for tp in consumer.assignment()) == partitions

    owned = consumer.assignment()
    per_partition = {p: sum(1 for r in expected if r[1] == p) for p in partitions}  # the feed uses 0 and 1
    assert per_partition[0] == (N + 1) // 2 and per_partition[1] == N // 2
    # the next offset to read; a partition never read has no position yet (-1001), as in confluent-kafka
    positions = {tp.partition: tp.offset for tp in consumer.position(owned)}
    assert positions == {p: n if n else -1001 for p, n in per_partition.items()}
    for tp in owned:
        assert consumer.get_watermark_offsets(tp, timeout=10) == (0, per_partition[tp.partition])
        assert consumer.get_watermark_offsets(tp, cached=True)[1] == per_partition[tp.partition]

    consumer.pause(owned)  # the governor's flow control: nothing is delivered while paused
    _produce(settings, topic, 10, first=N)
    assert _read_native(consumer, 1, timeout_s=2.0) == []
    consumer.resume(owned)
    assert len(_read_native(consumer, 10)) == 10

    consumer.commit(offsets=[TopicPartition(topic, 0, 7)], asynchronous=False)
    check = Consumer(_config(settings, group))
    assert check.committed([TopicPartition(topic, 0)], timeout=10)[0].offset == 7
    check.close()

    consumer.close()
    assert events[-1][0] == "revoke"  # leaving the group runs the revoke callback, as confluent-kafka's
    with pytest.raises(RuntimeError, match="closed"):
        consumer.consume(10, 0.1)
    consumer.close()  # idempotent


def test_an_exception_in_a_rebalance_callback_surfaces_from_consume(settings: Settings) -> None:
    topic = settings.kafka.topic("quotes")
    ensure_topics(settings.kafka, ["quotes"])

    def on_assign(consumer: NativeConsumer, partitions: list[TopicPartition]) -> None:
        raise ValueError("the lake is unreachable")

    consumer = NativeConsumer(_config(settings))
    consumer.subscribe([topic], on_assign=on_assign)
    with pytest.raises(ValueError, match="the lake is unreachable"):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            consumer.consume(100, 0.5)
    consumer.close()


def test_a_bad_configuration_is_a_kafka_exception_that_names_it() -> None:
    with pytest.raises(KafkaException, match=r"no\.such\.property"):
        NativeConsumer({"group.id": "g", "no.such.property": "1"})


def test_errors_go_to_the_error_callback_once_not_into_every_batch() -> None:
    """No broker listens: librdkafka's transport errors reach error_cb, the batches stay empty."""
    seen: list[Any] = []
    consumer = NativeConsumer({"bootstrap.servers": "127.0.0.1:1", "group.id": uuid.uuid4().hex,
                               "error_cb": seen.append})  # fmt: skip
    consumer.subscribe(["nothing"])
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:
        assert consumer.consume(10, 0.5) == []
    assert seen and not seen[0].fatal()
    consumer.close()


def _group_config(settings: Settings, group: str, **extra: Any) -> dict[str, Any]:
    return {**_config(settings, group), "heartbeat.interval.ms": 300, "session.timeout.ms": 6000, **extra}


def test_a_batch_holds_nothing_polled_before_a_rebalance_inside_it(settings: Settings) -> None:
    """A second member joins while the first waits in one long consume(): the messages it polled
    before the revoke are stale (the runner re-assigns from the lake's watermarks) and must not
    come back beside the re-read ones, as librdkafka's batch consume drops them too."""
    topic = settings.kafka.topic("trades")
    ensure_topics(settings.kafka, ["trades"])
    stop = threading.Event()

    def produce() -> None:
        producer, i = TickProducer(settings.kafka), 0
        while not stop.is_set():
            for _ in range(200):  # every partition: each member's share has messages
                producer.send_raw(topic, None, b"v%d" % i, partition=i % settings.kafka.partitions)
                i += 1
            producer.poll(0)
            time.sleep(0.05)
        producer.close()

    group, events = uuid.uuid4().hex, list[tuple[str, list[int]]]()

    def on_assign(consumer: NativeConsumer, partitions: list[TopicPartition]) -> None:
        for p in partitions:
            p.offset = OFFSET_BEGINNING  # the runner's re-seek to the watermark, here the start
        events.append(("assign", [p.partition for p in partitions]))
        consumer.assign(partitions)

    def on_revoke(consumer: NativeConsumer, partitions: list[TopicPartition]) -> None:
        events.append(("revoke", [p.partition for p in partitions]))
        consumer.unassign()

    feeder = threading.Thread(target=produce)
    feeder.start()
    first = NativeConsumer(_group_config(settings, group))
    try:
        first.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
        assert len(_read_native(first, 1_000)) >= 1_000
        joined = threading.Event()

        def second_member() -> None:
            time.sleep(1.0)
            other = Consumer(_group_config(settings, group))
            other.subscribe([topic])
            while not joined.is_set():
                other.poll(0.2)
            other.close()

        member = threading.Thread(target=second_member)
        member.start()
        before, checked, deadline = len(events), 0, time.monotonic() + 25
        seen = len(events)
        # per owned partition, the next offset: where it stands now, and from 0 after an assign
        expected = {tp.partition: max(tp.offset, 0) for tp in first.position(first.assignment())}
        try:
            while time.monotonic() < deadline and not (checked and len(events) > before + 1):
                # Between calls the group's events queue up (as while the pipeline processes a batch),
                # so a call often finds a rebalance waiting and then polls the re-assigned partitions.
                time.sleep(0.3)
                batch = first.consume(1_000_000, 1.0)
                if len(events) > seen:  # a rebalance ran in this call: every owned partition restarts
                    seen = len(events)
                    owned = events[-1][1] if events[-1][0] == "assign" else []
                    expected = dict.fromkeys(owned, 0)
                if not isinstance(batch, NativeBatch) or not batch.messages:
                    continue
                assert set(batch.partitions.tolist()) <= set(expected)  # nothing of a partition another took
                for p in expected:  # the re-read from the start, nothing stale before it, nothing skipped
                    offsets = batch.offsets[batch.partitions == p]
                    if len(offsets):
                        assert offsets.tolist() == list(range(expected[p], expected[p] + len(offsets))), p
                        expected[p] += len(offsets)
                checked += len(events) > before
        finally:
            joined.set()
            member.join()
        assert any(kind == "revoke" for kind, _ in events[before:]), events  # the rebalance came
        assert checked  # and batches after it were checked
    finally:
        stop.set()
        feeder.join()
        first.close()


def test_a_fenced_static_member_hears_a_fatal_error(settings: Settings) -> None:
    """Two processes with one group.instance.id: the older is fenced. The error callback must say
    fatal, or the runner would only log it and never replace the consumer."""
    topic = settings.kafka.topic("quotes")
    ensure_topics(settings.kafka, ["quotes"])
    group, heard = uuid.uuid4().hex, list[KafkaError]()
    first = NativeConsumer(
        {**_group_config(settings, group, **{"group.instance.id": "one"}), "error_cb": heard.append}
    )
    first.subscribe([topic])
    second = Consumer(_group_config(settings, group, **{"group.instance.id": "one"}))
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not first.assignment():
            first.consume(10, 0.2)
        second.subscribe([topic])
        fatal: list[KafkaError] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not fatal:
            second.poll(0.1)
            batch = first.consume(10, 0.2)
            fatal = [e for e in heard if e.fatal()]
            if isinstance(batch, NativeBatch):
                fatal += [e for e in batch.errors if e.fatal()]
        assert fatal, heard
        assert any(e.fatal() for e in heard)  # the callback itself says so
    finally:
        second.close()
        first.close()


def test_an_unclosed_consumer_is_collected() -> None:
    """The extension holds its callbacks weakly: a consumer nobody closed does not keep its owner."""
    owner = NativeConsumer({"bootstrap.servers": "127.0.0.1:1", "group.id": uuid.uuid4().hex})
    gone = weakref.ref(owner)
    del owner
    gc.collect()
    assert gone() is None
