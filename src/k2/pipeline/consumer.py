"""The ingest consumer's librdkafka configuration, shared with the benchmark's raw baseline.

The baseline must read with the same fetch settings as K2, or the ratio measures configuration.
"""

from __future__ import annotations

from typing import Any, Literal

from confluent_kafka import Consumer, KafkaError, Message

from k2.config import Settings
from k2.pipeline import native
from k2.pipeline.native import NativeBatch, NativeConsumer
from k2.types import TopicPartition as TP

__all__ = [
    "FETCH",
    "Batch",
    "KafkaConsumer",
    "consumer_config",
    "fatal_error",
    "is_fatal",
    "last_offsets",
    "use_native",
]

#: Either consumer the pipeline reads with (``pipeline.consumer``), and what its ``consume`` returns.
KafkaConsumer = Consumer | NativeConsumer
Batch = list[Message] | NativeBatch

#: Fetch sizes for a backlog of small messages: large fetches, and a deep local queue so that
#: librdkafka keeps fetching while Python decodes (queued.min.messages is per partition).
FETCH: dict[str, Any] = {
    "fetch.max.bytes": 64 * 1024 * 1024,
    "max.partition.fetch.bytes": 16 * 1024 * 1024,
    "queued.max.messages.kbytes": 256 * 1024,
    "queued.min.messages": 500_000,
}


def consumer_config(settings: Settings) -> dict[str, Any]:
    """The pipeline consumer: manual offsets (they live in Iceberg snapshots), range assignment."""
    pipeline = settings.pipeline
    return {
        "bootstrap.servers": settings.kafka.bootstrap,
        "group.id": pipeline.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "range",
        **FETCH,
        "session.timeout.ms": pipeline.session_timeout_ms,
        # also the rebalance timeout: how long a join waits for members that vanished
        "max.poll.interval.ms": 60000,
        **({"group.instance.id": pipeline.instance_id} if pipeline.instance_id else {}),
        **settings.kafka.client,
    }


def use_native(choice: Literal["auto", "native", "python"]) -> bool:
    """Whether to read with the native consumer: ``auto`` uses it when it was built.

    Raises:
        RuntimeError: ``native`` was asked for and the extension is not built.
    """
    if choice == "native" and not native.available():
        raise RuntimeError(
            "pipeline.consumer=native, but K2's native consumer is not built: run `make setup` "
            "with a Rust toolchain (rustup), or set K2_PIPELINE__CONSUMER=python"
        )
    return choice != "python" and native.available()


def last_offsets(batch: Batch) -> dict[TP, int]:
    """The highest offset read per partition in a batch (errors left out)."""
    if isinstance(batch, NativeBatch):
        return batch.last_offsets()
    last: dict[TP, int] = {}
    for m in batch:
        if m.error() is None:
            tp = (m.topic() or "", m.partition() or 0)
            last[tp] = max(last.get(tp, -1), m.offset() or 0)
    return last


def fatal_error(batch: Batch) -> KafkaError | None:
    """A fatal consumer error in a batch (a fenced static member: the consumer must be replaced).

    Read as soon as the batch arrives, before the runner decides to process or drop it: a batch
    dropped after a rebalance may be the only place the fence is said.
    """
    if isinstance(batch, NativeBatch):
        errors = batch.errors
    elif any(map(Message.error, batch)):  # one pass in C: a batch without errors costs nothing more
        errors = [e for m in batch if (e := m.error()) is not None]
    else:
        return None
    for error in errors:
        if is_fatal(error):
            return error
    return None


def is_fatal(error: KafkaError) -> bool:
    """The consumer is unusable: the flag, or the code librdkafka delivers a fence with (flag unset)."""
    return bool(error.fatal()) or error.code() == KafkaError._FATAL
