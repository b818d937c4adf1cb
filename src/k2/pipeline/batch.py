"""One micro-batch: Kafka messages → decode → validate (→ DLQ) → shed (→ spill) → checks → table sinks.

It runs on the pipeline's process thread while the consumer thread reads the next batch: decoding
(Rust), validation and the checks (Polars) release the GIL, so on two cores the read and the work
overlap. It never touches the consumer (librdkafka wants that on one thread); everything that
pauses, seeks or commits stays on the consumer thread (``runner.py``, ``committer.py``), which waits
for this batch before any of those.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import numpy as np
import polars as pl
from confluent_kafka import KafkaError, Message

from k2 import schemas
from k2.observability.logging import get_logger
from k2.observability.metrics import REGISTRY, Counter, Histogram
from k2.pipeline.checkpoint import Checkpoint
from k2.pipeline.checks import BatchChecks, NoChecks
from k2.pipeline.consumer import is_fatal
from k2.pipeline.native import NativeBatch
from k2.pipeline.sinks import TableSink
from k2.resilience.breaker import BreakerBoard
from k2.resilience.degradation import DegradationManager
from k2.resilience.levels import Level
from k2.resilience.metrics import BACKFILLED
from k2.resilience.shed import split
from k2.resilience.spill import Spill
from k2.resilience.tiers import PriorityTiers
from k2.schemas.joined import JoinedPayloads
from k2.schemas.validate import Validator, with_message_times
from k2.state import CheckResult
from k2.stream.control import marker_clock, marker_mask
from k2.stream.dlq import DeadLetter
from k2.stream.producer import TickProducer
from k2.stream.timestamps import message_times_us

__all__ = ["BatchProcessor", "Decoded", "PipelineStats"]

log = get_logger(__name__)

MESSAGES = Counter("k2_pipeline_messages_total", "Messages read", ["topic"], registry=REGISTRY)
DEAD_LETTERS = Counter(
    "k2_pipeline_dead_letters_total", "Messages sent to the DLQ", ["topic"], registry=REGISTRY
)
DROPPED_DUPLICATES = Counter(
    "k2_pipeline_duplicates_dropped_total", "Duplicates not written", ["topic"], registry=REGISTRY
)
BATCH_SECONDS = Histogram(
    "k2_pipeline_batch_seconds", "Processing time of one micro-batch", registry=REGISTRY,
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)  # fmt: skip


@dataclass
class PipelineStats:
    messages: int = 0
    written: int = 0
    dead_letters: int = 0
    duplicates: int = 0
    commits: int = 0
    deferred: int = 0
    backfilled: int = 0
    stalls: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)
    #: the run ended with a range its last commit could not store (the next run reads it again)
    uncommitted: bool = False
    #: the newest dead letters (at, reason, source), for the status file's data-quality panel
    latest_dead_letters: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=5))


@dataclass(frozen=True)
class BatchOutcome:
    """What the consumer thread needs to know about a processed batch."""

    seconds: float  # busy time, for the degradation signal
    had_ticks: bool  # at least one message that was not a consumer error (idleness)
    #: a fatal consumer error among the messages (librdkafka delivers a fenced static member's
    #: error this way, not through the error callback): the consumer must be replaced
    fatal: KafkaError | None = None


@dataclass(frozen=True, slots=True)
class _TopicWork:
    """One topic's part of a decoded batch: the valid rows, and the dead letters' reasons."""

    topic: str
    kind: str
    records: _Records
    markers: list[tuple[int, int, int | None]]
    frame: pl.DataFrame  # decoded, validated, with _partition and _offset
    index: np.ndarray  # each frame row's position in records
    letters: list[tuple[int, str]]  # (position in records, reason)


@dataclass(frozen=True, slots=True)
class Decoded:
    """A batch after ``BatchProcessor.decode``: what ``BatchProcessor.__call__`` applies."""

    topics: list[_TopicWork]
    fatal: KafkaError | None
    had_ticks: bool


class BatchProcessor:
    """The per-batch transform, wired once by the runner (``runner.Pipeline``'s constructor)."""

    def __init__(
        self,
        *,
        topics: Mapping[str, str],
        source_topics: Mapping[str, str],
        spill_topics: Mapping[str, str],
        sinks_by_topic: Mapping[str, TableSink],
        checkpoint: Checkpoint,
        checks: BatchChecks,
        validator: Validator,
        producer: TickProducer,
        spill: Spill,
        tiers: PriorityTiers,
        degradation: DegradationManager,
        breakers: BreakerBoard,
        stats: PipelineStats,
    ) -> None:
        self.topics = topics
        self.source_topics = source_topics
        self.spill_topics = spill_topics
        self.sinks_by_topic = sinks_by_topic
        self.checkpoint = checkpoint
        self.checks = checks
        self.validator = validator
        self.producer = producer
        self.spill = spill
        self.tiers = tiers
        self.degradation = degradation
        self.breakers = breakers
        self.stats = stats
        self._tiers_seen_at = 0.0
        #: per source partition, the offsets below the tick table's watermark that the run which
        #: committed them deferred (``deferrals.py``), as a one-row List series (what ``is_in``
        #: takes); set on assignment, for the rebuild
        self.deferred_before: dict[tuple[str, int], pl.Series] = {}

    def decode(self, messages: list[Message] | NativeBatch) -> Decoded:
        """Decode and validate a batch: no state is touched, so the consumer thread runs it for
        batch N+1 while the process thread applies batch N (two cores instead of one)."""
        topics: list[_TopicWork] = []
        if isinstance(messages, NativeBatch):
            fatal = _fatal(messages.errors)
            if messages.messages:
                for topic in messages.topics:
                    kind = self.topics.get(topic)
                    if kind is not None:
                        topics.append(self._decode_topic(topic, kind, _Records.of_native(messages, topic)))
            return Decoded(topics, fatal, messages.messages > 0)
        # Whole-list passes through the C method descriptors: per-message calls are the cost floor.
        fatal = None
        if any(map(Message.error, messages)):
            good = [m for m in messages if m.error() is None]
            fatal = _fatal([e for m in messages if (e := m.error()) is not None])
        else:
            good = messages
        if not good:
            return Decoded(topics, fatal, False)
        names = cast("list[str]", list(map(Message.topic, good)))  # without an error, it has a topic
        if names.count(names[0]) == len(names):
            by_topic = {names[0]: good}
        else:
            by_topic = {}
            for m, topic in zip(good, names, strict=True):
                by_topic.setdefault(topic, []).append(m)
        for topic, batch in by_topic.items():
            kind = self.topics.get(topic)
            if kind is not None:
                topics.append(self._decode_topic(topic, kind, _Records.of_messages(batch)))
        return Decoded(topics, fatal, True)

    def __call__(self, batch: list[Message] | NativeBatch | Decoded) -> BatchOutcome:
        """Process one batch (decoded here unless ``decode`` ran already) into the live checkpoint.

        Raises:
            StateStoreError, CircuitOpenError (retryable): the state store failed while classifying;
                what this batch did to the checks cannot be taken back piecemeal, so the runner
                drops everything not yet frozen and re-reads it.
        """
        started = time.perf_counter()
        work = batch if isinstance(batch, Decoded) else self.decode(batch)
        for topic in work.topics:
            self._apply(topic)
        seconds = time.perf_counter() - started  # a decode on the consumer thread is counted there
        if work.had_ticks:
            BATCH_SECONDS.observe(seconds)
        return BatchOutcome(seconds, had_ticks=work.had_ticks, fatal=work.fatal)

    def _decode_topic(self, topic: str, kind: str, records: _Records) -> _TopicWork:
        values, partitions, offsets = records.values, records.partitions, records.offsets
        # expire markers (k2.stream.control) take an offset but are no tick: swept by the checks
        is_marker = marker_mask(values)
        markers: list[tuple[int, int, int | None]] = []
        ticks: Sequence[bytes] = values
        if is_marker is not None:
            at = np.flatnonzero(is_marker).tolist()
            markers = [(int(partitions[i]), int(offsets[i]), marker_clock(records.key(i))) for i in at]
            positions = np.flatnonzero(~is_marker)
            ticks = (
                values.take(positions)
                if isinstance(values, JoinedPayloads)
                else [values[i] for i in positions.tolist()]
            )
        decoded = schemas.decode_batch(kind, ticks)
        frame = decoded.frame
        index = (
            frame.get_column("_index").to_numpy() if "_index" in frame.columns else np.arange(frame.height)
        )
        letters = list(decoded.errors)
        if is_marker is not None:  # back to positions in the whole batch
            index = positions[index]
            letters = [(int(positions[i]), reason) for i, reason in letters]
        frame = frame.drop("_index", strict=False).with_columns(
            pl.Series("_partition", partitions[index], dtype=pl.Int32),
            pl.Series("_offset", offsets[index], dtype=pl.Int64),
        )
        times = records.times_us[index]  # fixed per message: a replay judges as this read does
        reasons = self.validator.reasons(kind, with_message_times(frame, times))
        bad = reasons.is_not_null()
        if bad.any():
            bad_np = bad.to_numpy()
            letters += [(int(index[r]), str(reasons[int(r)])) for r in np.flatnonzero(bad_np)]
            frame = frame.filter(~bad)
            index = index[~bad_np]
        return _TopicWork(topic, kind, records, markers, frame, index, letters)

    def _apply(self, work: _TopicWork) -> None:
        topic, kind, records, markers, frame = work.topic, work.kind, work.records, work.markers, work.frame
        values, partitions, offsets = records.values, records.partitions, records.offsets
        n = len(values)
        self.stats.messages += n - len(markers)
        self.stats.by_topic[topic] = self.stats.by_topic.get(topic, 0) + n - len(markers)
        MESSAGES.labels(topic).inc(n - len(markers))
        sink = self.sinks_by_topic[topic]
        self._dead_letters(topic, sink, work.letters, values, partitions, offsets)
        if topic in self.source_topics:
            frame = self._shed(kind, topic, sink, frame, work.index, values)

        result = self._classify(kind, topic, frame, markers)
        kept = frame.filter(result.keep)
        duplicates = frame.height - kept.height
        if duplicates:
            self.stats.duplicates += duplicates
            DROPPED_DUPLICATES.labels(topic).inc(duplicates)
        rows = kept.rename({"_partition": "kafka_partition", "_offset": "kafka_offset"})
        end = _ends(partitions, offsets)
        buffered = sink.add(topic, rows, end)
        gap_events = result.gap_events if result.gap_events is not None else pl.DataFrame()
        self.checkpoint.gap_sink.add(topic, gap_events, end)
        self.checkpoint.record_read({(topic, p): o for p, o in end.items()})
        self.stats.written += buffered  # not the rows a replay re-reads below the table's watermark
        if topic in self.spill_topics:
            self.stats.backfilled += buffered
            BACKFILLED.labels(kind).inc(buffered)

    def _classify(
        self, kind: str, topic: str, frame: pl.DataFrame, markers: list[tuple[int, int, int | None]]
    ) -> CheckResult:
        if isinstance(self.checks, NoChecks):
            return self.checks.process(kind, topic, frame, markers)
        return self.breakers.get("state").call(self.checks.process, kind, topic, frame, markers)

    def _shed(
        self,
        kind: str,
        topic: str,
        sink: TableSink,
        frame: pl.DataFrame,
        index: np.ndarray,
        values: Sequence[bytes],
    ) -> pl.DataFrame:
        """Defer the rows of the level's deferred tiers to the spill; returns the rows to process now.

        Runs before the checks, so deferred ticks leave no trace in the sequence state and come
        back as in-order ticks or late fills of the gaps their absence opened. Rows below the tick
        table's watermark (read again to rebuild the state) were decided by the run that committed
        them, not by today's level: the ones it deferred are left out, the others are processed.
        """
        actions = self.degradation.actions
        now = time.monotonic()
        # Volume counts cost a group_by: at NORMAL one batch a second is a fair sample of activity.
        if actions.defer_tiers or self.degradation.level != Level.NORMAL or now - self._tiers_seen_at >= 1.0:
            self._tiers_seen_at = now
            self.tiers.observe(frame, refresh=not actions.skip_optional)
        if frame.height == 0:
            return frame
        replayed = _below(frame, topic, sink)
        skip = self._deferred_before(topic, frame) if replayed is not None else None
        if actions.defer_tiers:
            _keep, defer = split(frame, self.tiers, actions)
            if replayed is not None:
                defer = defer & ~replayed
            if defer.any():
                deferred = frame.filter(defer)
                payloads = [values[i] for i in index[defer.to_numpy()]]
                self.stats.deferred += self.spill.send(kind, topic, deferred, payloads)
                skip = defer if skip is None else skip | defer
        return frame if skip is None or not skip.any() else frame.filter(~skip)

    def _deferred_before(self, topic: str, frame: pl.DataFrame) -> pl.Series | None:
        """Rows the committing run deferred (``deferred_before``), or None if there are none."""
        sets = {
            p: offsets
            for p in frame.get_column("_partition").unique().to_list()
            if (offsets := self.deferred_before.get((topic, p))) is not None
        }
        if not sets:
            return None
        mask = pl.repeat(False, frame.height, dtype=pl.Boolean, eager=True)
        parts, offs = frame.get_column("_partition"), frame.get_column("_offset")
        for p, offsets in sets.items():
            mask = mask | ((parts == p) & offs.is_in(offsets))
        return mask

    def _dead_letters(
        self,
        topic: str,
        sink: TableSink,
        letters: list[tuple[int, str]],
        values: Sequence[bytes],
        partitions: np.ndarray,
        offsets: np.ndarray,
    ) -> None:
        at = datetime.now(UTC).isoformat(timespec="milliseconds")
        for i, reason in letters:
            p, o = int(partitions[i]), int(offsets[i])
            if o < sink.watermark((topic, p)):
                continue  # already dead-lettered before the crash that made us replay it
            source = f"topic={topic} partition={p} offset={o}"
            self.producer.send_dead_letter(DeadLetter(value=values[i], reason=reason, source=source))
            self.stats.dead_letters += 1
            self.stats.latest_dead_letters.append({"at": at, "reason": reason[:200], "source": source})
            DEAD_LETTERS.labels(topic).inc()


def _fatal(errors: Sequence[KafkaError]) -> KafkaError | None:
    """Log the consumer errors of a batch; the fatal one, if any (the consumer must be replaced)."""
    fatal = None
    for err in errors:
        if err.code() != KafkaError._PARTITION_EOF:
            log.warning("consumer error", error=str(err))
            if is_fatal(err):
                fatal = err
    return fatal


@dataclass(frozen=True, slots=True)
class _Records:
    """One topic's messages of a batch as columns, from either consumer."""

    values: Sequence[bytes]  # a tombstone (None) is b"": dead-lettered like any undecodable payload
    partitions: np.ndarray
    offsets: np.ndarray
    times_us: np.ndarray  # the message's timestamp, -1 where it has none
    key: Callable[[int], bytes | None]

    @classmethod
    def of_messages(cls, batch: list[Message]) -> _Records:
        n = len(batch)
        raw = list(map(Message.value, batch))
        return cls(
            values=[v or b"" for v in raw] if None in raw else cast("list[bytes]", raw),
            partitions=np.fromiter(map(Message.partition, batch), dtype=np.int32, count=n),
            offsets=np.fromiter(map(Message.offset, batch), dtype=np.int64, count=n),
            times_us=message_times_us(batch),
            key=lambda i: batch[i].key(),
        )

    @classmethod
    def of_native(cls, batch: NativeBatch, topic: str) -> _Records:
        rows = batch.rows_of(topic)
        return cls(
            values=batch.payloads(rows),
            partitions=batch.partitions if rows is None else batch.partitions[rows],
            offsets=batch.offsets if rows is None else batch.offsets[rows],
            times_us=batch.times_us(rows),
            key=lambda i: batch.key(i if rows is None else int(rows[i])),
        )


def _below(frame: pl.DataFrame, topic: str, sink: TableSink) -> pl.Series | None:
    """Rows below the sink's watermark for their partition (a replay), or None if there are none."""
    marks = {p: sink.watermark((topic, p)) for p in frame.get_column("_partition").unique().to_list()}
    if max(marks.values()) <= frame.get_column("_offset").min():  # type: ignore[operator]
        return None
    floor = pl.col("_partition").replace_strict(marks, return_dtype=pl.Int64)
    below = frame.select(pl.col("_offset") < floor).to_series()
    return below if below.any() else None


def _ends(partitions: np.ndarray, offsets: np.ndarray) -> dict[int, int]:
    """Next offset to read per partition after this batch."""
    out: dict[int, int] = {}
    for p in np.unique(partitions):
        out[int(p)] = int(offsets[partitions == p].max()) + 1
    return out
