"""The tick producer: Polars frames in, Avro payloads keyed by symbol out, nothing accepted lost.

Delivery guarantees come from librdkafka, configured for them: idempotence (no duplicates or
reordering on retries, which also forces ``acks=all`` and unlimited retries within
``message.timeout.ms``), lz4 batches lingering a few milliseconds. Python's share is kept to one
``produce`` call per message: payloads are encoded a frame at a time (``encode_batch``), metrics
are counted a batch at a time, and delivery latency is read from librdkafka's own per-message
clock (``Message.latency()``) for one delivery in ``latency_sample_every``.

"Accepted" means queued in librdkafka. ``close()`` (and a ``KeyboardInterrupt`` inside ``send``)
flushes the queue before returning or re-raising, so a Ctrl-C loses none of it; a second Ctrl-C
during that flush abandons what is left, as most command-line tools do.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import polars as pl
from confluent_kafka import KafkaError, KafkaException, Producer

from k2.config import KafkaSettings
from k2.errors import ConfigError
from k2.observability.logging import get_logger
from k2.observability.metrics import REGISTRY, Counter, Histogram
from k2.schemas import SchemaRegistry, default_registry
from k2.schemas.encode import conform, encode_bodies, payload_header
from k2.stream.dlq import DeadLetter
from k2.stream.errors import ProduceError, UndeliveredError

__all__ = [
    "PRODUCER_DEFAULTS",
    "SEND_CHUNK_ROWS",
    "ProducerStats",
    "TickProducer",
    "produce_when_room",
    "topic_for",
]

log = get_logger(__name__)

#: librdkafka options K2 sets; ``kafka.client`` entries override them (native dotted names).
PRODUCER_DEFAULTS: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 10,
    "compression.type": "lz4",
    "batch.size": 1_000_000,  # bytes per partition batch: a full one is ~10 K ticks
    "batch.num.messages": 20_000,
    "queue.buffering.max.messages": 1_000_000,
    "queue.buffering.max.kbytes": 1_048_576,
    "client.id": "k2-producer",
}
#: Poll for delivery reports every 16 K messages inside a large send (a power of two, as a mask).
_POLL_MASK = 16_384 - 1
_ONLY_ERRORS = "delivery.report.only.error"
#: Rows encoded and queued per step inside one ``send``.
SEND_CHUNK_ROWS = 65_536
_TOPIC_OF_KIND = {
    "trades": "trades",
    "quotes": "quotes",
    "instruments": "reference",
    "corporate_actions": "reference",
}


def produce_when_room(
    producer: Producer, topic: str, value: bytes, key: Any, partition: int | None = None, headers: Any = None
) -> None:
    """Queue one message, waiting while librdkafka's local queue is full (``BufferError``).

    Each wait serves delivery reports for 50 ms, which is what frees room in the queue. The one such
    loop in K2: the tick producer and the spill both call it. ``KafkaException`` (a refused
    message) propagates at once.
    """
    while True:
        try:
            if partition is None:
                producer.produce(topic, value, key, headers=headers)
            else:
                producer.produce(topic, value, key, partition, headers=headers)
            return
        except BufferError:
            producer.poll(0.05)


def topic_for(kafka: KafkaSettings, kind: str) -> str:
    """The full topic of a kind: trades and quotes have their own, reference kinds share ``reference``."""
    return kafka.topic(_TOPIC_OF_KIND.get(kind, kind))


@dataclass(frozen=True)
class ProducerStats:
    """Counts since the producer was built (for progress displays).

    Attributes:
        sent: messages accepted into the local queue.
        delivered: messages the broker acknowledged.
        failed: messages whose delivery failed for good.
        bytes: value bytes accepted.
        in_flight: librdkafka's queue length: messages (and protocol requests) not yet acknowledged.
    """

    sent: int
    delivered: int
    failed: int
    bytes: int
    in_flight: int


@dataclass(frozen=True)
class _Metrics:
    messages: Counter
    bytes: Counter
    errors: Counter
    delivery: Histogram


@functools.cache
def _metrics() -> _Metrics:
    """Registered once, on first use (not at import)."""
    return _Metrics(
        messages=Counter(
            "k2_producer_messages", "Messages accepted by the producer.", ["topic"], registry=REGISTRY
        ),
        bytes=Counter(
            "k2_producer_bytes", "Value bytes accepted by the producer.", ["topic"], registry=REGISTRY
        ),
        errors=Counter(
            "k2_producer_errors",
            "Messages that failed to be queued or delivered.",
            ["topic"],
            registry=REGISTRY,
        ),
        delivery=Histogram(
            "k2_producer_delivery_seconds",
            "From produce() to the broker's acknowledgement, sampled.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=REGISTRY,
        ),
    )


class TickProducer:
    """Produces tick frames, raw messages and dead letters to K2's topics.

    Args:
        kafka: the Kafka settings; ``kafka.client`` adds or overrides librdkafka options.
        registry: the schemas to encode with; default: the built-in ones.
        latency_sample_every: observe the delivery latency of one message in this many.
    """

    def __init__(
        self, kafka: KafkaSettings, *, registry: SchemaRegistry | None = None, latency_sample_every: int = 64
    ) -> None:
        self._kafka = kafka
        self._registry = registry or default_registry()
        self._sample_every = max(1, latency_sample_every)
        self._metrics = _metrics()
        config = {**PRODUCER_DEFAULTS, "bootstrap.servers": kafka.bootstrap, **kafka.client}
        config["on_delivery"] = self._on_delivery
        config["error_cb"] = self._on_error
        # Opt-in (kafka.client): no delivery report for successes saves ~0.4 µs of Python per
        # message, at the price of no latency samples and a derived ``delivered`` count.
        self._only_errors = str(config.get(_ONLY_ERRORS, "false")).lower() in ("true", "1")
        config[_ONLY_ERRORS] = self._only_errors  # the Python client insists on a bool here
        try:
            self._producer = Producer(config)
        except KafkaException as exc:
            raise ConfigError(f"invalid Kafka producer option (kafka.client): {exc.args[0].str()}") from exc
        self._sent = self._delivered = self._failed = self._bytes = 0
        self._fatal: KafkaError | None = None
        self._closed = False

    # -- callbacks (run inside poll/flush, on the calling thread) ---------------------------------

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is None:
            self._delivered += 1
            if self._delivered % self._sample_every == 0:
                latency = msg.latency()
                if latency is not None:
                    self._metrics.delivery.observe(latency)
            return
        self._failed += 1
        topic = msg.topic() or "?"
        self._metrics.errors.labels(topic).inc()
        if self._failed <= 10 or self._failed % 10_000 == 0:
            log.error("delivery failed", topic=topic, error=err.str(), failed=self._failed)

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            self._fatal = err
            log.error("producer fatal error", error=err.str())
        else:
            log.warning("kafka client error", error=err.str())

    # -- producing --------------------------------------------------------------------------------

    @property
    def stats(self) -> ProducerStats:
        """Counts so far. With ``delivery.report.only.error`` set, ``delivered`` is derived as sent -
        failed - queued: exact once flushed, an underestimate by a request or two while busy."""
        queued = len(self)
        delivered = max(0, self._sent - self._failed - queued) if self._only_errors else self._delivered
        return ProducerStats(self._sent, delivered, self._failed, self._bytes, queued)

    def _check_usable(self, topic: str) -> None:
        if self._closed:
            raise ProduceError("producer is closed", topic=topic)
        if self._fatal is not None:
            raise ProduceError(
                f"producer hit a fatal error: {self._fatal.str()}", topic=topic, code=self._fatal.name()
            )

    def _schema_id(self, kind: str) -> int | None:
        """The Confluent id to frame with, when a schema registry is configured."""
        if self._kafka.schema_registry_url is None:
            return None
        schema = self._registry.current(kind)
        schema_id = self._registry.schema_id(schema)
        if schema_id is None:
            raise ProduceError(
                f"kafka.schema_registry_url is set but no Confluent schema id is bound to {schema}; "
                "K2 has no registry client: register the schema there and bind its id with "
                "SchemaRegistry.bind_schema_id",
                topic=topic_for(self._kafka, kind),
            )
        return schema_id

    def send(self, kind: str, batch: pl.DataFrame) -> int:
        """Encode a frame and queue one message per row, key = symbol, in row order.

        ``ingest_ts`` is stamped with the current time where it is null (or absent): the moment K2
        accepted the tick. Rows of one symbol keep their order (one key, one partition, idempotence).

        Returns:
            The number of messages queued.

        Raises:
            EncodeError: the frame does not fit the kind's schema (nothing was queued).
            ProduceError: Kafka refused a message (messages before it stay queued).
        """
        topic = topic_for(self._kafka, kind)
        self._check_usable(topic)
        if batch.height == 0:
            return 0
        schema = self._registry.current(kind)
        if "ingest_ts" in schema.frame_schema:
            batch = _stamp_ingest(batch)
        frame = conform(kind, schema, batch)  # the whole frame is checked before anything is queued
        header = payload_header(schema, self._schema_id(kind))
        done = 0
        # Encode and queue in slices: librdkafka starts sending the first while the next is encoded,
        # and a million-row frame never exists as a million payloads at once.
        for lo in range(0, frame.height, SEND_CHUNK_ROWS):
            part = frame.slice(lo, SEND_CHUNK_ROWS)
            payloads = encode_bodies(schema, part, header)
            keys = part.get_column("symbol").to_list() if "symbol" in part.columns else [None] * part.height
            done += self._produce_all(topic, keys, payloads)
        return done

    def _produce_all(self, topic: str, keys: list[Any], payloads: list[bytes]) -> int:
        # The one per-message loop in K2's producer: keep it to a produce call and a counter.
        produce, poll = self._producer.produce, self._producer.poll
        done = 0
        try:
            for value, key in zip(payloads, keys, strict=True):
                try:
                    produce(topic, value, key)
                except BufferError:
                    self._produce_when_room(topic, value, key)
                done += 1
                if not done & _POLL_MASK:
                    poll(0)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            code = error.name() if isinstance(error, KafkaError) else None
            self._metrics.errors.labels(topic).inc()
            raise ProduceError(f"cannot produce to {topic}: {exc}", topic=topic, code=code) from exc
        except KeyboardInterrupt:
            log.warning("interrupted: delivering the messages already accepted", topic=topic, accepted=done)
            self._producer.flush()
            raise
        finally:
            size = sum(map(len, payloads if done == len(payloads) else payloads[:done]))
            self._sent += done
            self._bytes += size
            self._metrics.messages.labels(topic).inc(done)
            self._metrics.bytes.labels(topic).inc(size)
        poll(0)
        return done

    def _produce_when_room(
        self, topic: str, value: bytes, key: Any, headers: Any = None, partition: int | None = None
    ) -> None:
        produce_when_room(self._producer, topic, value, key, partition, headers=headers)

    def send_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: dict[str, str] | None = None,
        *,
        partition: int | None = None,
    ) -> None:
        """Queue one message as is (replays, tests, tools, control markers), to ``partition`` if given.

        Raises:
            ProduceError: Kafka refused the message.
        """
        self._check_usable(topic)
        self._produce_one(topic, key, value, list(headers.items()) if headers else None, partition)

    def send_dead_letter(self, letter: DeadLetter) -> None:
        """Queue a dead letter on the DLQ topic (original bytes, reason/source/time headers).

        Raises:
            ProduceError: Kafka refused the message.
        """
        topic = self._kafka.topic("dlq")
        self._check_usable(topic)
        self._produce_one(topic, letter.key, letter.value, letter.headers())

    def _produce_one(
        self, topic: str, key: bytes | None, value: bytes, headers: Any, partition: int | None = None
    ) -> None:
        try:
            try:
                if partition is None:
                    self._producer.produce(topic, value, key, headers=headers)
                else:
                    self._producer.produce(topic, value, key, partition, headers=headers)
            except BufferError:
                self._produce_when_room(topic, value, key, headers, partition)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            self._metrics.errors.labels(topic).inc()
            code = error.name() if isinstance(error, KafkaError) else None
            raise ProduceError(f"cannot produce to {topic}: {exc}", topic=topic, code=code) from exc
        self._sent += 1
        self._bytes += len(value)
        self._metrics.messages.labels(topic).inc()
        self._metrics.bytes.labels(topic).inc(len(value))
        self._producer.poll(0)

    def poll(self, timeout_s: float = 0.0) -> int:
        """Serve delivery reports; returns how many were served."""
        return 0 if self._closed else self._producer.poll(timeout_s)

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait until everything queued is acknowledged (or failed), at most ``timeout_s``.

        Returns:
            How many messages are still undelivered (0 when all are done).
        """
        if self._closed:
            return 0
        return self._producer.flush(timeout_s)

    def __len__(self) -> int:
        """Messages (and protocol requests) queued or in flight."""
        return 0 if self._closed else len(self._producer)

    def __bool__(self) -> bool:
        # An idle producer is still a producer: ``producer or TickProducer(...)`` must not rebuild it.
        return True

    def close(self, timeout_s: float = 60.0) -> None:
        """Deliver everything accepted, then release the producer. Calling it twice is harmless.

        A ``KeyboardInterrupt`` during the flush is held back until the flush is over (a second one
        abandons it).

        Raises:
            UndeliveredError: messages were still undelivered after ``timeout_s``.
        """
        if self._closed:
            return
        try:
            remaining = self._producer.flush(timeout_s)
        except KeyboardInterrupt:
            log.warning(
                "interrupted while closing: still delivering (Ctrl-C again to abandon)", in_flight=len(self)
            )
            self._shutdown(self._producer.flush(timeout_s))
            raise
        self._shutdown(remaining)
        if remaining:
            log.error("producer closed with undelivered messages", undelivered=remaining)
            raise UndeliveredError(
                f"{remaining} message(s) undelivered after {timeout_s}s", undelivered=remaining
            )

    def _shutdown(self, remaining: int) -> None:
        """Destroy the librdkafka handle now (its threads and sockets), not whenever GC gets to it."""
        if remaining:
            # Give up on what the broker never took (librdkafka's close would wait for it): purged
            # messages get failed delivery reports, so ``stats.failed`` counts them.
            self._producer.purge()
            self._producer.flush(1.0)
        self._closed = True
        self._producer.close()

    def __enter__(self) -> TickProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _stamp_ingest(batch: pl.DataFrame) -> pl.DataFrame:
    """Fill a null or missing ``ingest_ts`` with now (UTC, microseconds), a whole column at once."""
    now = pl.lit(datetime.now(UTC), dtype=pl.Datetime("us", "UTC"))
    if "ingest_ts" not in batch.columns:
        return batch.with_columns(now.alias("ingest_ts"))
    if batch.get_column("ingest_ts").null_count() == 0:
        return batch
    return batch.with_columns(pl.col("ingest_ts").cast(pl.Datetime("us", "UTC")).fill_null(now))
