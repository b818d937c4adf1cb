"""The spill on the real broker: deferred ticks come back byte for byte, failures are kept, back-fill is gated."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

import polars as pl
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from k2.config import Settings
from k2.config.resilience import ResilienceSettings
from k2.observability.metrics import sample
from k2.resilience.errors import SpillFormatError
from k2.resilience.flow import FlowControl
from k2.resilience.levels import Level, actions_for
from k2.resilience.signals import consumer_lag
from k2.resilience.spill import HEADER_SOURCE, Spill, SpilledRecord, spill_topic

SYMBOLS = ["BHP", "CBA", "NAB", "WBC", "ANZ"]


def create_topics(settings: Settings, *names: str) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    futures = admin.create_topics(
        [
            NewTopic(settings.kafka.topic(n), num_partitions=settings.kafka.partitions, replication_factor=1)
            for n in names
        ]
    )
    for future in futures.values():
        future.result(30)


def deferred_batch(
    n: int, source_partition: int = 2, first_offset: int = 100
) -> tuple[pl.DataFrame, list[bytes]]:
    frame = pl.DataFrame(
        {
            "exchange": ["ASX"] * n,
            "symbol": [SYMBOLS[i % len(SYMBOLS)] for i in range(n)],
            "_partition": pl.Series([source_partition] * n, dtype=pl.Int32),
            "_offset": pl.Series(range(first_offset, first_offset + n), dtype=pl.Int64),
        }
    )
    payloads = [b"\xc3\x01" + os.urandom(8) + bytes([i % 256]) * (i % 7) for i in range(n)]
    return frame, payloads


def consumer_for(settings: Settings, topics: list[str]) -> Consumer:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap,
            "group.id": settings.pipeline.group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.assign(
        [TopicPartition(t, p, OFFSET_BEGINNING) for t in topics for p in range(settings.kafka.partitions)]
    )
    return consumer


def read(consumer: Consumer, expected: int, timeout_s: float = 20.0) -> list[Message]:
    out: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < expected and time.monotonic() < deadline:
        for msg in consumer.consume(expected - len(out), 0.2):
            if msg.error() is None:
                out.append(msg)
    return out


def test_spill_keeps_original_bytes_key_and_lineage(settings: Settings) -> None:
    create_topics(settings, "spill.trades", "spill.quotes")
    spill = Spill(settings.kafka)
    frame, payloads = deferred_batch(200)
    source = settings.kafka.topic("trades")
    deferred_before = sample("k2_deferred_total", {"kind": "trades"})
    spilled_before = sample("k2_spilled_total", {"kind": "trades"})

    sent_at = datetime.now(UTC)
    assert spill.send("trades", source, frame, payloads) == 200
    assert spill.flush(30) == 0  # durable: the pipeline may now commit the source offsets
    assert sample("k2_deferred_total", {"kind": "trades"}) == deferred_before + 200
    assert sample("k2_spilled_total", {"kind": "trades"}) == spilled_before + 200

    topic = spill_topic(settings.kafka, "trades")
    assert topic == settings.kafka.topic("spill.trades")
    consumer = consumer_for(settings, [topic])
    try:
        messages = read(consumer, 200)
        assert len(read(consumer, 1, timeout_s=1.0)) == 0  # exactly 200, no duplicates
    finally:
        consumer.close()
    assert len(messages) == 200
    by_offset = {int(frame["_offset"][i]): (frame["symbol"][i], payloads[i]) for i in range(200)}
    order: dict[str, list[int]] = {}
    for msg in messages:
        record = SpilledRecord.from_message(msg)
        symbol, payload = by_offset[record.source_offset]
        assert record.value == payload  # the original bytes, not a re-encoding
        assert record.key == symbol.encode()
        assert (record.source_topic, record.source_partition) == (source, 2)
        # one header, in the dead letters' format; the spill time is the message's own timestamp
        source_header = f"topic={source} partition=2 offset={record.source_offset}".encode()
        assert dict(msg.headers() or []) == {HEADER_SOURCE: source_header}
        assert record.spilled_at is not None and abs((record.spilled_at - sent_at).total_seconds()) < 60
        # co-partitioned: source partition 2 -> spill partition 2, owned by the same consumer
        assert msg.partition() == 2
        order.setdefault(symbol, []).append(record.source_offset)
    assert all(offsets == sorted(offsets) for offsets in order.values())  # source order kept


def test_undelivered_spill_is_reported_kept_and_delivered_later(settings: Settings) -> None:
    """The spill topic is missing: flush says "not durable" (so nothing is committed), and once the
    topic exists the same flush call delivers every tick: deferred, never dropped."""
    spill = Spill(
        settings.kafka,
        config={
            "message.timeout.ms": 1500,
            "topic.metadata.propagation.max.ms": 500,
            "topic.metadata.refresh.interval.ms": 500,  # notice the new topic quickly
        },
    )
    frame, payloads = deferred_batch(7)
    spill.send("quotes", settings.kafka.topic("quotes"), frame, payloads)
    assert spill.flush(15) == 7

    assert spill.flush(5) == 7  # still missing: still kept, still reported
    create_topics(settings, "spill.quotes")
    deadline = time.monotonic() + 30
    while spill.flush(5) and time.monotonic() < deadline:
        time.sleep(0.5)  # the producer learns of the new topic at its next metadata refresh
    assert spill.flush(5) == 0
    consumer = consumer_for(settings, [spill_topic(settings.kafka, "quotes")])
    try:
        messages = read(consumer, 7)
    finally:
        consumer.close()
    assert sorted(m.value() for m in messages) == sorted(payloads)
    # re-produced from the held batch, so each keeps its own lineage and key
    records = {SpilledRecord.from_message(m).source_offset: SpilledRecord.from_message(m) for m in messages}
    assert sorted(records) == frame["_offset"].to_list()
    for i, offset in enumerate(frame["_offset"].to_list()):
        assert records[offset].value == payloads[i] and records[offset].key == frame["symbol"][i].encode()


def test_backfill_waits_for_normal_and_resumes_where_it_stopped(settings: Settings) -> None:
    create_topics(settings, "trades", "spill.trades")
    source, spill_t = settings.kafka.topic("trades"), spill_topic(settings.kafka, "trades")
    spill = Spill(settings.kafka)
    frame, payloads = deferred_batch(50)
    spill.send("trades", source, frame, payloads)
    assert spill.flush(30) == 0

    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap})
    for i in range(30):
        producer.produce(source, key=SYMBOLS[i % 5].encode(), value=b"live-%d" % i)
    assert producer.flush(30) == 0

    consumer = consumer_for(settings, [source, spill_t])
    flow = FlowControl({spill_t})
    resilience = ResilienceSettings()
    try:
        flow.assigned(consumer, actions_for(Level.GRACEFUL, resilience), stalled=False)
        live = read(consumer, 30)
        assert len(live) == 30 and {m.topic() for m in live} == {source}
        assert read(consumer, 1, timeout_s=2.0) == []  # the spill waits while degraded
        spill_parts = [TopicPartition(spill_t, p) for p in range(settings.kafka.partitions)]
        # never fetched, so no cached watermark: counted as 0. The degradation signal reads only the
        # source partitions, which are always being fetched.
        assert consumer_lag(consumer, spill_parts) == 0

        flow.apply(consumer, actions_for(Level.NORMAL, resilience), stalled=False)
        first = read(consumer, 1)
        # fetched now: the cached watermarks show what is left (each symbol has 10 spilled ticks)
        assert 0 < consumer_lag(consumer, spill_parts) <= 50 - len(first)
        backfill = first + read(consumer, 50 - len(first))
        assert len(backfill) == 50 and {m.topic() for m in backfill} == {spill_t}
        assert sorted(SpilledRecord.from_message(m).value for m in backfill) == sorted(payloads)
        assert consumer_lag(consumer, spill_parts) == 0  # caught up, measured from cached watermarks

        # a breaker opens mid-way: everything pauses, and nothing is skipped on resume
        flow.apply(consumer, actions_for(Level.NORMAL, resilience), stalled=True)
        for i in range(10):
            producer.produce(source, key=b"BHP", value=b"later-%d" % i)
        assert producer.flush(30) == 0
        assert read(consumer, 1, timeout_s=2.0) == []
        flow.apply(consumer, actions_for(Level.NORMAL, resilience), stalled=False)
        later = read(consumer, 10)
        assert sorted(m.value() for m in later) == sorted(b"later-%d" % i for i in range(10))
    finally:
        consumer.close()


def test_a_foreign_message_on_the_spill_topic_is_refused_by_name(settings: Settings) -> None:
    create_topics(settings, "spill.trades")
    topic = spill_topic(settings.kafka, "trades")
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap})
    producer.produce(topic, key=b"BHP", value=b"not from k2", partition=1)
    assert producer.flush(30) == 0
    consumer = consumer_for(settings, [topic])
    try:
        (msg,) = read(consumer, 1)
    finally:
        consumer.close()
    with pytest.raises(SpillFormatError) as info:
        SpilledRecord.from_message(msg)
    assert (info.value.topic, info.value.partition, info.value.offset) == (topic, 1, 0)


def test_a_replayed_range_is_not_spilled_twice(settings: Settings) -> None:
    """After a crash the source range is read again from the lowest stage watermark; ticks below the
    tick table's watermark were spilled by the commit that advanced it, so ``floor`` skips them."""
    create_topics(settings, "spill.trades")
    spill = Spill(settings.kafka)
    frame, payloads = deferred_batch(40, source_partition=3, first_offset=100)  # offsets 100..139
    assert spill.send("trades", settings.kafka.topic("trades"), frame, payloads, floor={3: 130, 0: 5}) == 10
    assert spill.flush(30) == 0
    consumer = consumer_for(settings, [spill_topic(settings.kafka, "trades")])
    try:
        messages = read(consumer, 10)
        assert read(consumer, 1, timeout_s=1.0) == []
    finally:
        consumer.close()
    records = sorted((SpilledRecord.from_message(m) for m in messages), key=lambda r: r.source_offset)
    assert [r.source_offset for r in records] == list(range(130, 140))
    assert [r.value for r in records] == payloads[30:]


def test_close_delivers_then_releases_the_producer_and_reports_what_stayed_undelivered(
    settings: Settings,
) -> None:
    """A closed pipeline's spill producer kept reconnecting to a stopped broker for 90 s (make bench):
    close() now releases it, after a flush; what the broker never took is reported, not hidden."""
    create_topics(settings, "spill.trades")
    spill = Spill(settings.kafka)
    frame, payloads = deferred_batch(20)
    spill.send("trades", settings.kafka.topic("trades"), frame, payloads)
    assert spill.close(30) == 0
    assert spill.close(30) == 0  # a second close is harmless
    with pytest.raises(RuntimeError, match="closed"):
        spill.flush(1)  # the librdkafka handle is gone
    consumer = consumer_for(settings, [spill_topic(settings.kafka, "trades")])
    try:
        assert len(read(consumer, 20)) == 20  # delivered before the release
    finally:
        consumer.close()

    stuck = Spill(settings.kafka, config={"message.timeout.ms": 1500})  # spill.quotes does not exist
    frame, payloads = deferred_batch(5)
    stuck.send("quotes", settings.kafka.topic("quotes"), frame, payloads)
    assert stuck.close(3) == 5  # not durable: the pipeline did not commit past these, a restart re-reads them
    assert stuck.close(3) == 5
