"""Producer throughput: ticks -> Kafka through TickProducer, beside the raw client as the ceiling.

    python -m benchmarks.bench_producer [--quick] [--rows N] [--repeats R] [--bootstrap host:port]

Each repeat sends the same frame of trades twice, to fresh topics, timed from the first call until
every message is acknowledged (``flush``):

* ``k2 TickProducer``: ``send(kind, frame)`` in batches (vectorised Avro encoding, key = symbol,
  idempotent, lz4, metrics) — everything K2 does per tick;
* ``raw confluent-kafka``: the same librdkafka settings producing the *already encoded* payloads
  with the same keys — what the client alone costs, the ceiling for any Python producer.

Without ``--bootstrap`` a broker is started through K2's launcher in a temporary data directory on
free ports, and stopped at the end.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import polars as pl
from confluent_kafka import Producer

from benchmarks.bench_codec import make_ticks
from benchmarks.results import write_result
from benchmarks.services import kafka_broker
from k2.config import KafkaSettings, LogSettings
from k2.observability.logging import configure_logging
from k2.schemas import encode_batch
from k2.stream.admin import ensure_topics
from k2.stream.producer import PRODUCER_DEFAULTS, TickProducer

__all__ = ["main"]


@contextmanager
def _broker(bootstrap: str | None) -> Iterator[KafkaSettings]:
    """The Kafka to use: the given one, or a throwaway broker started (and stopped) here."""
    if bootstrap:
        yield KafkaSettings(bootstrap_servers=bootstrap)
        return
    with kafka_broker() as settings:
        yield settings.kafka


def _fresh(kafka: KafkaSettings) -> KafkaSettings:
    topics = kafka.model_copy(update={"topic_prefix": f"bench{uuid.uuid4().hex[:8]}."})
    ensure_topics(topics, ["trades"])
    return topics


def _k2(kafka: KafkaSettings, frame: pl.DataFrame, batch: int) -> tuple[float, int]:
    started = time.perf_counter()
    producer = TickProducer(kafka)
    for lo in range(0, frame.height, batch):
        producer.send("trades", frame.slice(lo, batch))
    producer.close()
    elapsed = time.perf_counter() - started
    stats = producer.stats
    assert stats.delivered == frame.height and stats.failed == 0, stats
    return elapsed, stats.bytes


def _raw(kafka: KafkaSettings, keys: list[str], payloads: list[bytes]) -> float:
    topic = kafka.topic("trades")
    delivered = [0]

    def on_delivery(err: object, _msg: object) -> None:
        delivered[0] += err is None

    started = time.perf_counter()
    producer = Producer(
        {**PRODUCER_DEFAULTS, "bootstrap.servers": kafka.bootstrap, "on_delivery": on_delivery}
    )
    produce, poll = producer.produce, producer.poll
    for i, (value, key) in enumerate(zip(payloads, keys, strict=True)):
        while True:
            try:
                produce(topic, value, key)
                break
            except BufferError:
                poll(0.05)
        if i % 16_384 == 0:
            poll(0)
    producer.flush(120)
    elapsed = time.perf_counter() - started
    assert delivered[0] == len(payloads), delivered
    return elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a short run")
    parser.add_argument("--rows", type=int, default=None, help="ticks per repeat (1000000; quick 200000)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats, median reported (3; quick 2)")
    parser.add_argument("--batch", type=int, default=100_000, help="rows per send() call")
    parser.add_argument("--bootstrap", default=None, help="an existing Kafka; default: start one")
    args = parser.parse_args(argv)
    configure_logging(LogSettings(level="WARNING"))
    rows = args.rows or (200_000 if args.quick else 1_000_000)
    repeats = args.repeats or (2 if args.quick else 3)

    frame = make_ticks("trades", rows)
    payloads = encode_batch("trades", frame)
    keys = frame["symbol"].to_list()
    size = sum(map(len, payloads))
    k2_times: list[float] = []
    raw_times: list[float] = []
    with _broker(args.bootstrap) as kafka:
        _k2(_fresh(kafka), frame.head(20_000), args.batch)  # warm-up: broker caches, first metadata
        for r in range(repeats):
            # alternate which goes first, so neither always meets a broker still busy with the other
            for name in ("k2", "raw") if r % 2 == 0 else ("raw", "k2"):
                if name == "k2":
                    k2_times.append(_k2(_fresh(kafka), frame, args.batch)[0])
                else:
                    raw_times.append(_raw(_fresh(kafka), keys, payloads))
            k2_now, raw_now = rows / k2_times[-1], rows / raw_times[-1]
            print(f"repeat {r + 1}: k2 {k2_now:,.0f} ticks/s, raw {raw_now:,.0f} msg/s", flush=True)
    k2_rate = rows / statistics.median(k2_times)
    raw_rate = rows / statistics.median(raw_times)
    print(
        f"producer benchmark: {rows:,} trades x {repeats} repeats, {size / rows:.0f} bytes/payload, "
        "acks=all, idempotent, lz4"
    )
    print(f"{'implementation':<34}{'ticks/s':>12}{'MB/s':>9}")
    print(f"{'k2 TickProducer (encode+produce)':<34}{k2_rate:>12,.0f}{k2_rate * size / rows / 1e6:>9.1f}")
    print(f"{'raw confluent-kafka (pre-encoded)':<34}{raw_rate:>12,.0f}{raw_rate * size / rows / 1e6:>9.1f}")
    print(f"k2 / raw ceiling = {k2_rate / raw_rate:.2f}  (target: >= 250,000 ticks/s)")
    write_result(
        "bench_producer",
        {
            "k2_producer_msgs_per_s": k2_rate,
            "raw_producer_msgs_per_s": raw_rate,
            "payload_bytes": size / rows,
        },
        quick=args.quick,
        notes="one local KRaft broker sharing the machine's cores with the producer; acks=all, lz4",
    )


if __name__ == "__main__":
    main()
