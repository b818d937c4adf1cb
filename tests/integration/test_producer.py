"""The producer against a real broker: topics, order per symbol, nothing lost, DLQ, interruption."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import polars as pl
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition
from confluent_kafka.admin import ConfigResource

from k2.config import KafkaSettings, Settings
from k2.observability.metrics import sample
from k2.schemas import decode_batch, frame_schema, message_ids
from k2.stream.admin import admin_client, ensure_topics
from k2.stream.dlq import DeadLetter, message_source
from k2.stream.producer import TickProducer
from tests.unit.schemas.conftest import decimals

SYMBOLS = ["BHP", "RIO", "CBA", "WBC", "NAB", "ANZ"]


def ticks(n: int, *, first_sequence: dict[str, int] | None = None, seed: int = 0) -> pl.DataFrame:
    """n trades over SYMBOLS, each symbol's sequence continuing from ``first_sequence``."""
    rng = np.random.default_rng(seed)
    symbols = np.array(SYMBOLS)[rng.integers(0, len(SYMBOLS), n)]
    start = first_sequence or {}
    frame = pl.DataFrame({"exchange": "ASX", "symbol": symbols, "session": date(2014, 3, 10)}).with_columns(
        (pl.int_range(pl.len()).over("symbol") + pl.col("symbol").replace_strict(start, default=1)).alias(
            "sequence"
        )
    )
    stamp = np.datetime64("2014-03-09T23:00:00", "us").astype(np.int64) + np.arange(n) * 1_000
    frame = frame.with_columns(
        pl.Series("exchange_ts", stamp).cast(pl.Datetime("us", "UTC")),
        pl.lit(None, pl.Datetime("us", "UTC")).alias("ingest_ts"),
        decimals(rng.integers(1_000_000, 90_000_000, n)).alias("price"),
        decimals(rng.integers(1, 5_000, n) * 1_000_000).alias("size"),
        pl.lit(None, pl.String).alias("trade_id"),
        pl.lit("XT").alias("qualifiers"),
        pl.lit(None, pl.String).alias("venue"),
    )
    frame = frame.with_columns(message_ids("trades", frame).alias("message_id"))
    return frame.select(list(frame_schema("trades")))


def consume(kafka: KafkaSettings, topic: str, count: int, timeout_s: float = 60.0) -> list[Message]:
    """Every message of a topic from the beginning, in partition order, until ``count`` arrived."""
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap,
            "group.id": f"test-{topic}",
            "enable.auto.commit": False,
            "log_level": 0,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.topics[topic].partitions])
        out: list[Message] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < count and time.monotonic() < deadline:
            out += [m for m in consumer.consume(10_000, 0.5) if m.error() is None]
        extra = [m for m in consumer.consume(10_000, 0.5) if m.error() is None]  # nothing beyond count
        return out + extra
    finally:
        consumer.close()


def test_ensure_topics_creates_the_configured_layout_once(settings: Settings) -> None:
    kafka = settings.kafka.model_copy(update={"partitions": 3, "retention_ms": 3_600_000})
    created = ensure_topics(kafka)
    assert sorted(created) == sorted(kafka.topic(n) for n in ("trades", "quotes", "reference", "dlq"))
    assert ensure_topics(kafka) == []
    admin = admin_client(kafka)
    meta = admin.list_topics(timeout=10)
    assert all(len(meta.topics[t].partitions) == 3 for t in created)
    resource = ConfigResource(ConfigResource.Type.TOPIC, kafka.topic("trades"))
    config = admin.describe_configs([resource])[resource].result()
    assert config["retention.ms"].value == "3600000"


def test_ticks_arrive_once_each_in_order_per_symbol(settings: Settings) -> None:
    ensure_topics(settings.kafka)
    topic = settings.kafka.topic("trades")
    before = sample("k2_producer_delivery_seconds_count")
    sent: list[pl.DataFrame] = []
    with TickProducer(settings.kafka, latency_sample_every=10) as producer:
        next_seq: dict[str, int] = {}
        for i in range(5):
            batch = ticks(1_000, first_sequence=next_seq, seed=i)
            assert producer.send("trades", batch) == 1_000
            sent.append(batch)
            last = batch.group_by("symbol").agg(pl.col("sequence").max())
            next_seq = {s: q + 1 for s, q in last.iter_rows()}
    assert producer.stats.delivered == 5_000 and producer.stats.failed == 0
    assert sample("k2_producer_delivery_seconds_count") - before >= 400  # one in ten sampled

    messages = consume(settings.kafka, topic, 5_000)
    assert len(messages) == 5_000
    result = decode_batch("trades", [m.value() for m in messages])
    assert result.ok
    got = result.frame.with_columns(
        pl.Series("key", [m.key() for m in messages]),
        pl.Series("partition", [m.partition() for m in messages]),
    )
    expected = pl.concat(sent)
    assert sorted(got["message_id"].to_list()) == sorted(expected["message_id"].to_list())
    assert (got["key"] == got["symbol"].cast(pl.Binary)).all()
    assert got.group_by("symbol").agg(pl.col("partition").n_unique())["partition"].max() == 1
    for symbol, frame in got.group_by("symbol"):
        seq = frame["sequence"].to_list()
        assert seq == list(range(1, len(seq) + 1)), f"{symbol} out of order"
    ingest = got["ingest_ts"]
    assert ingest.null_count() == 0 and ingest.min() > datetime(2020, 1, 1, tzinfo=UTC)
    assert (
        got.drop("key", "partition", "ingest_ts")
        .sort("message_id")
        .equals(expected.drop("ingest_ts").sort("message_id"))
    )


def test_reference_kinds_share_the_reference_topic(settings: Settings) -> None:
    ensure_topics(settings.kafka, ["reference"])
    instruments = pl.DataFrame(
        {
            "exchange": ["ASX", "ASX"],
            "symbol": ["BHP", "MWR"],
            "isin": ["AU000000BHP4", None],
            "name": ["BHP BILLITON LTD", "MGM WIRELESS LTD"],
            "listing_start": [date(2008, 5, 7), date(2003, 11, 6)],
            "listing_end": [None, date(2014, 3, 31)],
        },
        schema=frame_schema("instruments"),
    )
    with TickProducer(settings.kafka) as producer:
        producer.send("instruments", instruments)
    messages = consume(settings.kafka, settings.kafka.topic("reference"), 2)
    result = decode_batch("instruments", [m.value() for m in messages])
    assert result.frame.sort("symbol").equals(instruments.sort("symbol"))


def test_dead_letter_round_trip(settings: Settings) -> None:
    ensure_topics(settings.kafka, ["dlq"])
    letter = DeadLetter(
        value=b"\x00garbage\xff",
        reason="unknown Confluent schema id 1734439522",
        source=message_source(settings.kafka.topic("trades"), 2, 41),
        key=b"BHP",
    )
    with TickProducer(settings.kafka) as producer:
        producer.send_dead_letter(letter)
        producer.send_raw(settings.kafka.topic("dlq"), None, b"not a letter", {"x": "y"})
    first, second = consume(settings.kafka, settings.kafka.topic("dlq"), 2)[:2]
    letters = [m for m in (first, second) if m.headers() and dict(m.headers()).get("k2.reason")]
    assert len(letters) == 1
    assert DeadLetter.from_message(letters[0]) == letter


class _InterruptAfter:
    """The real librdkafka producer, with a Ctrl-C arriving before the n-th produce call."""

    def __init__(self, inner: Any, after: int) -> None:
        self._inner, self._after, self.calls = inner, after, 0

    def produce(self, *args: Any, **kwargs: Any) -> None:
        if self.calls == self._after:
            raise KeyboardInterrupt
        self.calls += 1
        self._inner.produce(*args, **kwargs)

    def __len__(self) -> int:
        return len(self._inner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_ctrl_c_during_send_delivers_everything_accepted(settings: Settings) -> None:
    ensure_topics(settings.kafka, ["trades"])
    producer = TickProducer(settings.kafka)
    producer._producer = _InterruptAfter(producer._producer, 1_700)  # type: ignore[assignment]
    with pytest.raises(KeyboardInterrupt):
        producer.send("trades", ticks(3_000))
    # flushed before re-raising: every accepted message is already acknowledged
    assert producer.stats.sent == 1_700 and producer.stats.delivered == 1_700
    producer.close()
    messages = consume(settings.kafka, settings.kafka.topic("trades"), 1_700, timeout_s=30)
    assert len(messages) == 1_700


def test_close_right_after_send_loses_nothing(settings: Settings) -> None:
    ensure_topics(settings.kafka, ["quotes"])
    frame = ticks(4_000, seed=3)
    quotes = frame.select(list(frame_schema("quotes"))[:7]).with_columns(
        decimals(np.full(4_000, 10_000_000)).alias("bid_price"),
        decimals(np.full(4_000, 10_010_000)).alias("ask_price"),
        decimals(np.zeros(4_000, dtype=np.int64)).alias("bid_size"),
        decimals(np.full(4_000, 5_000_000)).alias("ask_size"),
    )
    quotes = quotes.with_columns(message_ids("quotes", quotes).alias("message_id"))
    producer = TickProducer(settings.kafka, latency_sample_every=1_000_000)
    producer.send("quotes", quotes)
    producer.close()  # no explicit flush: close must deliver what send accepted
    assert producer.stats.delivered == 4_000
    messages = consume(settings.kafka, settings.kafka.topic("quotes"), 4_000)
    result = decode_batch("quotes", [m.value() for m in messages])
    assert sorted(result.frame["message_id"].to_list()) == sorted(quotes["message_id"].to_list())
