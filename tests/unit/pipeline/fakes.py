"""Fakes for the pipeline's pure-logic tests: a table in memory with the writer's fencing contract,
checks that record what the pipeline asked of them, and the Kafka side (messages, producer, spill).

Nothing here re-implements what is under test: the sinks, the checkpoint, the batch processor and
the committer are the real ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import numpy as np
import polars as pl
import pyarrow as pa
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

from k2.lake.errors import StaleWriterError
from k2.lake.writer import NO_OFFSET
from k2.pipeline.checks import BatchChecks
from k2.pipeline.native import NativeBatch
from k2.pipeline.sinks import TableSink
from k2.schemas import frame_schema, message_ids
from k2.state import CheckResult
from k2.state.errors import StateStoreError
from k2.types import Offsets, TopicPartition

T0 = datetime(2024, 3, 11, 0, 0, tzinfo=UTC)


class MemoryWriter:
    """A table in memory with ``TableWriter``'s contract: an append covers [start, end) per
    partition, and is refused (``StaleWriterError``) unless the table's head sits at ``start``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.head: Offsets = {}
        self.appends: list[pa.Table] = []
        self.fail: BaseException | None = None

    def offsets(self) -> Offsets:
        return dict(self.head)

    def commit(self, rows: pa.Table, start: Offsets, end: Offsets) -> int:
        if self.fail is not None:
            raise self.fail
        moved = {
            tp: self.head.get(tp, NO_OFFSET)
            for tp in end
            if self.head.get(tp, NO_OFFSET) != start.get(tp, NO_OFFSET)
        }
        if moved:
            raise StaleWriterError(self.name, start, moved)
        self.head.update(end)
        self.appends.append(rows)
        return len(self.appends)

    @property
    def rows(self) -> pl.DataFrame:
        frames = [pl.DataFrame(pl.from_arrow(t)) for t in self.appends if t.num_rows]
        return pl.concat(frames) if frames else pl.DataFrame()


def sink(name: str, topics: set[str], schema: pa.Schema) -> tuple[TableSink, MemoryWriter]:
    writer = MemoryWriter(name)
    return TableSink(writer, topics, schema), writer  # type: ignore[arg-type]


def ticks(symbols: list[str], sequences: list[int]) -> pl.DataFrame:
    """Valid canonical trades: ``symbols[i]`` with ``sequences[i]``, one second apart."""
    n = len(symbols)
    frame = pl.DataFrame(
        {
            "message_id": [""] * n,
            "exchange": ["SIM"] * n,
            "symbol": symbols,
            "session": [date(2024, 3, 11)] * n,
            "sequence": sequences,
            "exchange_ts": [T0 + timedelta(seconds=i) for i in range(n)],
            "ingest_ts": [T0 + timedelta(seconds=i) for i in range(n)],
            "price": [Decimal("10.5")] * n,
            "size": [Decimal(100)] * n,
            "trade_id": [None] * n,
            "qualifiers": [None] * n,
            "venue": [None] * n,
        },
        schema=frame_schema("trades"),
    )
    return frame.with_columns(message_id=message_ids("trades", frame))


def trades_schema() -> pa.Schema:
    """The rows a trades sink holds: the canonical columns and their Kafka lineage."""
    return (
        ticks(["X"], [1])
        .with_columns(pl.lit(0, pl.Int32).alias("kafka_partition"), pl.lit(0, pl.Int64).alias("kafka_offset"))
        .to_arrow()
        .schema
    )


class RecordingChecks(BatchChecks):
    """Checks that drop the sequences listed in ``duplicates`` and record the pipeline's calls.

    ``fail`` makes ``process`` (or, with ``fail_commit``, the prepared commit) raise like a state
    store that is down.
    """

    def __init__(self) -> None:
        self.duplicates: set[int] = set()
        self.tokens: Offsets = {}
        self.fail = False
        self.fail_commit = False
        self.calls: list[tuple[str, Any]] = []
        self.committed: list[Offsets] = []
        self.seen: list[tuple[int, int]] = []  # (partition, offset) of every row classified
        self.markers: list[tuple[int, int, int | None]] = []  # (partition, offset, clock) of each marker

    def assign(self, partitions: list[TopicPartition]) -> Offsets:
        self.calls.append(("assign", sorted(partitions)))
        return {tp: self.tokens[tp] for tp in partitions if tp in self.tokens}

    def process(
        self, kind: str, topic: str, frame: pl.DataFrame, markers: Sequence[tuple[int, int, int | None]] = ()
    ) -> CheckResult:
        if self.fail:
            raise StateStoreError("redis is down", backend="redis")
        self.calls.append(("process", frame.height))
        self.markers += markers
        self.seen += frame.select("_partition", "_offset").iter_rows()
        return CheckResult(keep=~frame.get_column("sequence").is_in(list(self.duplicates)))

    def prepare(self, end: Offsets) -> Callable[[], None]:
        def commit() -> None:
            if self.fail_commit:
                raise StateStoreError("redis is down", backend="redis")
            self.committed.append(dict(end))

        return commit

    def revoke(self, partitions: list[TopicPartition]) -> None:
        self.calls.append(("revoke", sorted(partitions)))

    def close(self) -> None:
        self.calls.append(("close", None))


class FakeProducer:
    """The DLQ producer: keeps the dead letters; ``undelivered`` is what its flush reports."""

    def __init__(self) -> None:
        self.dead_letters: list[Any] = []
        self.undelivered = 0
        self.closed = False

    def send_dead_letter(self, letter: Any) -> None:
        self.dead_letters.append(letter)

    def flush(self, timeout: float = 0.0) -> int:
        return self.undelivered

    def close(self) -> None:
        self.closed = True


class FakeSpill:
    def __init__(self, *_: Any) -> None:
        self.sent: list[pl.DataFrame] = []
        self.deferred: dict[str, int] = {}
        self.durable: dict[str, int] = {}
        self.closed = False

    def send(self, kind: str, topic: str, frame: pl.DataFrame, payloads: list[bytes], *, floor: Any) -> int:
        self.sent.append(frame)
        return frame.height

    def flush(self, timeout: float = 0.0) -> int:
        return 0

    def close(self) -> None:
        self.closed = True


def as_native(messages: list[Message]) -> NativeBatch:
    """The batch the native consumer (native/src/lib.rs) returns for these messages: the same
    columns, laid out as its ``consume`` lays them out (errors apart, topics by first appearance)."""
    good = [m for m in messages if m.error() is None]
    topics: list[str] = []
    for m in good:
        if m.topic() not in topics:
            topics.append(cast(str, m.topic()))
    values = [m.value() or b"" for m in good]
    keys = [m.key() or b"" for m in good]
    times = [t if kind != TIMESTAMP_NOT_AVAILABLE else -1 for kind, t in (m.timestamp() for m in good)]
    errors = [(e.code(), e.str(), e.fatal()) for m in messages if (e := m.error()) is not None]
    raw = (
        topics,
        np.array([topics.index(cast(str, m.topic())) for m in good], np.uint16).tobytes(),
        np.array([m.partition() for m in good], np.int32).tobytes(),
        np.array([m.offset() for m in good], np.int64).tobytes(),
        np.array(times, np.int64).tobytes(),
        np.cumsum([len(v) for v in values], dtype=np.int64).tobytes(),
        b"".join(values),
        bytes(m.value() is None for m in good),
        np.cumsum([len(k) for k in keys], dtype=np.int64).tobytes(),
        b"".join(keys),
        errors,
    )
    return NativeBatch(raw)
