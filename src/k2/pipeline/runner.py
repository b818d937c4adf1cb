"""The ingest pipeline: Kafka micro-batches → decode → validate (→ DLQ) → shed → checks → Iceberg.

Life cycle (after Quix Streams' ``Application.run``): the constructor wires collaborators and
touches nothing; ``run()`` installs signal handlers that only request a stop, subscribes with
assign/revoke/lost callbacks, loops, and on a clean stop makes one final commit. After a failure
nothing is committed: the uncommitted range is simply read again by the next run.

Three threads overlap: this one reads batch N+1 from Kafka while the process thread turns batch N
into rows (``batch.py``) and the commit thread commits the checkpoint before it. The consumer,
freezing, seeking and pausing stay on this thread, and happen only between awaiting one batch and
handing over the next. The cyclic garbage collector is tuned for the run (``gcpolicy.py``).

Backpressure (``k2.resilience``, docs/resilience.md): each loop measures lag, busy ratio and memory;
the degradation level decides which tiers of symbols are deferred to the spill topics (back-filled
through the same path at NORMAL), the batch size, the commit interval and which partitions run.
A dependency that fails (Iceberg, the state store, Kafka produce), or whose circuit breaker is
open, *stalls* the pipeline instead of stopping it: every partition is paused, the frozen
checkpoint that failed is kept whole and committed again when the breaker lets a call through,
and consumption resumes once it went through. A state store that fails while a batch is being
classified makes the pipeline drop what it had not frozen yet and re-read it from the last
commit (a re-seek), once the store answers again. Any other error stops the pipeline as before.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from k2.config import Settings
from k2.lake.catalog import open_catalog
from k2.lake.errors import LakeError, StaleWriterError
from k2.lake.tables import GAPS, TICK_TABLES, ensure_tables
from k2.lake.writer import NO_OFFSET, TableWriter
from k2.observability.logging import get_logger
from k2.observability.metrics import REGISTRY, Gauge
from k2.pipeline.batch import BatchOutcome, BatchProcessor, PipelineStats
from k2.pipeline.checkpoint import Checkpoint, FrozenCheckpoint
from k2.pipeline.checks import BatchChecks, NoChecks
from k2.pipeline.consumer import consumer_config
from k2.pipeline.errors import DeadLetterDeliveryError
from k2.pipeline.gcpolicy import tuned_gc
from k2.pipeline.sinks import TableSink
from k2.pipeline.upkeep import Upkeep
from k2.resilience.breaker import BreakerBoard
from k2.resilience.degradation import DegradationManager, LevelChange
from k2.resilience.errors import SpillDeliveryError
from k2.resilience.flow import FlowControl
from k2.resilience.levels import Level
from k2.resilience.signals import LoadMeter, RssProbe, Signals, partition_lags
from k2.resilience.spill import Spill, ensure_spill_topics, spill_topic
from k2.resilience.status import StatusFile, status_path
from k2.resilience.tiers import PriorityTiers
from k2.schemas.validate import Validator, known_symbols
from k2.state.errors import StaleStateError, StateStoreError
from k2.stream.admin import ensure_topics
from k2.stream.producer import TickProducer
from k2.types import Offsets
from k2.types import TopicPartition as TP

__all__ = ["Pipeline", "PipelineStats"]

log = get_logger(__name__)

LAG = Gauge(
    "k2_pipeline_consumer_lag", "High watermark minus position", ["topic", "partition"], registry=REGISTRY
)


class Pipeline:
    """One consumer process of the ingest group."""

    def __init__(
        self,
        settings: Settings,
        *,
        checks: BatchChecks | None = None,
        crash_at: str | None = None,
    ) -> None:
        self.settings = settings
        self.kafka = settings.kafka
        self.checks = checks or NoChecks()
        self.stats = PipelineStats()
        self._running = False
        self._failed = False
        self._crash_at = crash_at
        self._assigned = False
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="k2-commit")
        self._inflight: tuple[Future[None], FrozenCheckpoint] | None = None
        # one batch is processed while the consumer reads the next (module docstring)
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="k2-process")
        self._processing: Future[BatchOutcome] | None = None
        self._process_error: BaseException | None = None  # retryable; the loop turns it into a stall
        self._epoch = 0  # bumped by every (re)assignment: batches read before it are read again
        self._submitted = 0
        self._last_message_at = time.monotonic()
        r = settings.resilience
        self.source_topics = {self.kafka.topic(kind): kind for kind in TICK_TABLES}
        self.spill_topics = {spill_topic(self.kafka, kind): kind for kind in TICK_TABLES}
        self.topics = {**self.source_topics, **self.spill_topics}  # subscribed; routed by kind
        self.degradation = DegradationManager(r)
        self.tiers = PriorityTiers(r)
        self.breakers = BreakerBoard(r.breakers)
        self.breakers.get("iceberg", failure_types=(LakeError, OSError), ignore=(StaleWriterError,))
        self.breakers.get("state", failure_types=(StateStoreError, OSError), ignore=(StaleStateError,))
        self.breakers.get(
            "kafka", failure_types=(DeadLetterDeliveryError, SpillDeliveryError, KafkaException)
        )
        self.flow = FlowControl(self.spill_topics)
        self.meter = LoadMeter(r.ratio_window_s)
        self.rss = RssProbe()
        self.lag = 0
        self.peak_lag = 0
        self.status_file = StatusFile(status_path(settings.data_dir))
        # stall: a commit (or a classification) failed on a dependency; see the module docstring
        self._stalled_until: float | None = None
        self._on_batch: Callable[[PipelineStats], None] | None = None
        self._stall_cause = ""
        self._retry: FrozenCheckpoint | None = None  # the frozen checkpoint to commit again
        self._reseek = False  # drop the unfrozen work and re-read it once the dependency is back

    # -- wiring -------------------------------------------------------------------------------
    def _build(self) -> None:
        catalog = open_catalog(self.settings)
        ns = self.settings.lake.namespace
        tables = ensure_tables(catalog, ns)
        self.upkeep = Upkeep(self.settings.lake, [tables[name] for name in (*TICK_TABLES, GAPS)])
        ensure_topics(self.kafka)
        ensure_spill_topics(self.kafka)  # co-partitioned with the sources: same partition counts
        self.producer = TickProducer(self.kafka)
        self.spill = Spill(self.kafka)
        self.validator = Validator(
            self.settings.pipeline.max_clock_skew_s, known_symbols(tables["reference"])
        )
        tick_sinks = [
            TableSink(
                TableWriter(catalog, f"{ns}.{kind}", sort_by=("symbol", "exchange_ts", "sequence")),
                {self.kafka.topic(kind), spill_topic(self.kafka, kind)},  # spill offsets in snapshots
                tables[kind].schema().as_arrow(),
            )
            for kind in TICK_TABLES
        ]
        gap_sink = TableSink(
            TableWriter(catalog, f"{ns}.{GAPS}"), set(self.topics), tables[GAPS].schema().as_arrow()
        )
        self.sinks_by_topic = {topic: sink for sink in tick_sinks for topic in sink.topics}
        self.consumer = Consumer(consumer_config(self.settings))
        self.checkpoint = Checkpoint(
            gap_sink=gap_sink,
            tick_sinks=tick_sinks,
            checks=self.checks,
            flush_dead_letters=lambda: self.producer.flush(30.0),
            commit_group_offsets=self._commit_group_offsets,
            max_rows=self.settings.lake.commit_rows,
            max_age_s=self.settings.lake.commit_interval_s,
            flush_spill=lambda: self.spill.flush(30.0),
            breakers=self.breakers,
        )
        if self._crash_at:
            self.checkpoint.crash_hook = _crash_hook(self._crash_at)
        self.process = BatchProcessor(
            topics=self.topics,
            source_topics=self.source_topics,
            spill_topics=self.spill_topics,
            sinks_by_topic=self.sinks_by_topic,
            checkpoint=self.checkpoint,
            checks=self.checks,
            validator=self.validator,
            producer=self.producer,
            spill=self.spill,
            tiers=self.tiers,
            degradation=self.degradation,
            breakers=self.breakers,
            stats=self.stats,
        )

    # -- partition life cycle -------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._await_process()
        self._epoch += 1
        tps: list[TP] = [(p.topic, p.partition) for p in partitions]
        marks: dict[TP, list[int]] = {tp: [] for tp in tps}
        for sink in self.checkpoint.sinks:
            sink.reset(tps)
            for tp in tps:
                if tp[0] in sink.topics:
                    marks[tp].append(sink.watermark(tp))
        for tp, offset in self.checks.assign(tps).items():
            marks[tp].append(offset)
        for p in partitions:
            start = min(marks[(p.topic, p.partition)], default=NO_OFFSET)
            p.offset = OFFSET_BEGINNING if start == NO_OFFSET else start
        self._last_message_at = time.monotonic()  # idleness counts from owning partitions, not joining
        self._assigned = True
        log.info(
            "partitions assigned", partitions={f"{p.topic}[{p.partition}]": p.offset for p in partitions}
        )
        consumer.assign(partitions)
        self.flow.assigned(consumer, self.degradation.actions, stalled=self._stalled_until is not None)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._failed:
            self._drain_process()
        else:
            self._await_process()  # its rows belong to this checkpoint: commit them with it
            try:
                self._await_commit()
                if self._retry is not None:  # one last try; the new owner replays it otherwise
                    frozen, self._retry = self._retry, None
                    frozen.commit()
                    frozen.commit_group_offsets()
                if not self._reseek:
                    self.checkpoint.commit(final=True)  # the partitions leave: move every watermark
            except (StaleWriterError, StaleStateError, *self.breakers.retryable()) as exc:
                log.warning("commit on revoke failed; the new owner replays the range", error=str(exc))
        self._forget([(p.topic, p.partition) for p in partitions])
        consumer.unassign()
        log.info("partitions revoked", count=len(partitions))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._drain_process()
        self._forget([(p.topic, p.partition) for p in partitions])
        consumer.unassign()
        log.warning("partitions lost; uncommitted work dropped", count=len(partitions))

    def _forget(self, tps: list[TP]) -> None:
        """Drop every uncommitted thing of partitions that moved away (their new owner replays them)."""
        self.checkpoint.discard()
        self.checks.revoke(tps)
        self.flow.revoked(tps)
        self._retry, self._reseek, self._process_error = None, False, None
        self._epoch += 1
        if self._stalled_until is not None:
            self._stalled_until = None
            log.info("stall ended: partitions moved to another consumer")

    # -- the process thread ----------------------------------------------------------------------
    def _submit(self, messages: list[Message]) -> None:
        """Hand a batch to the process thread (the previous one must have been awaited)."""
        assert self._processing is None
        self._submitted += len(messages)
        self._processing = self._worker.submit(self.process, messages)

    def _await_process(self) -> None:
        """Wait for the batch in process; fold its outcome into the loop's state.

        A retryable failure (the state store while classifying) marks a re-seek, and the loop
        stalls on it; any other failure is raised here, on the consumer thread.
        """
        if self._processing is None:
            return
        future, self._processing = self._processing, None
        try:
            outcome = future.result()
        except self.breakers.retryable() as exc:
            self._reseek = True
            self._process_error = exc
            return
        if outcome.had_ticks:
            self._last_message_at = time.monotonic()
        self.meter.add_busy(outcome.seconds)
        if self._on_batch is not None:
            self._on_batch(self.stats)

    def _drain_process(self) -> None:
        """Wait for the batch in process and ignore how it ended (its work is being dropped)."""
        try:
            self._await_process()
        except Exception as exc:  # the run is failing or the partitions are gone anyway
            log.debug("batch dropped with its partitions", error=str(exc))

    def _commit_group_offsets(self, end: Offsets) -> None:
        offsets = [TopicPartition(t, p, o) for (t, p), o in end.items()]
        if offsets:
            self.consumer.commit(offsets=offsets, asynchronous=True)

    # -- the loop -------------------------------------------------------------------------------
    def stop(self, *_: Any) -> None:
        """Ask the loop to end after the current batch (signal handlers call this, nothing more)."""
        self._running = False

    def run(
        self,
        *,
        idle_timeout_s: float | None = None,
        max_seconds: float | None = None,
        max_messages: int | None = None,
        on_batch: Callable[[PipelineStats], None] | None = None,
    ) -> PipelineStats:
        """Consume until stopped: a signal, ``idle_timeout_s`` without messages, ``max_seconds``, or
        ``max_messages`` read.

        Raises:
            K2Error: a failure that stops the pipeline; nothing after the last commit was kept.
        """
        self._build()
        self._on_batch = on_batch
        previous = {s: signal.signal(s, self.stop) for s in (signal.SIGINT, signal.SIGTERM)}
        self._running = True
        began = self._last_message_at = time.monotonic()
        try:
            with tuned_gc(self.settings.pipeline.gc_gen0_threshold):
                self._loop(began, idle_timeout_s, max_seconds, max_messages)
        except BaseException:
            self._failed = True
            raise
        finally:
            self._drain_process()
            self._worker.shutdown(wait=True)
            self._executor.shutdown(wait=True)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.consumer.close()
            self.producer.close()
            self.spill.close()
            self._write_status(stopped=True)
        self.stats.commits = self.checkpoint.commits
        return self.stats

    def _loop(
        self, began: float, idle_timeout_s: float | None, max_seconds: float | None, max_messages: int | None
    ) -> None:
        """Read batch N+1 while batch N is processed and the checkpoint before it commits.

        Everything that freezes, seeks or pauses runs here, between awaiting batch N and handing
        over N+1, so the process thread never sees the checkpoint change under it.
        """
        self.consumer.subscribe(
            list(self.topics), on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        base_batch = self.settings.pipeline.batch_max_messages
        while self._running:
            messages = self.consumer.consume(self.degradation.actions.batch_size(base_batch),
                                             self.settings.pipeline.poll_timeout_s)  # fmt: skip
            epoch = self._epoch  # rebalance callbacks ran inside consume(); these messages follow them
            busy_from = time.perf_counter()
            now = time.monotonic()
            self._await_process()
            if self._process_error is not None:
                error, self._process_error = self._process_error, None
                self._stall(error)  # the classification failed: drop unfrozen work, re-read it later
            if self._stalled_until is not None:
                self._recover(now)
                self._last_message_at = now  # a stall is not idleness: it must not end the run
            elif self.checkpoint.due():
                self._commit()
                if self.upkeep.due():  # queued behind that commit on the one worker: never concurrent
                    self._executor.submit(self.upkeep.run)
            elif self._inflight is not None and self._inflight[0].done():
                self._await_commit()  # surface a failure or a fence without waiting for the next
            if not messages and self._stalled_until is None and not self._reseek:
                self._expire()
            # A re-seek (pending, or done above) reads these messages again from the watermarks.
            if messages and not self._reseek and epoch == self._epoch:
                self._submit(messages)
            self.meter.add_busy(time.perf_counter() - busy_from)
            self._observe()
            if self.degradation.level != Level.NORMAL or self.flow.paused:
                self._last_message_at = now  # deferred work (back-fill) is still to come
            idle = now - self._last_message_at
            if idle_timeout_s is not None and self._assigned and idle > idle_timeout_s:
                break
            if max_seconds is not None and now - began > max_seconds:
                break
            if max_messages is not None and self._submitted >= max_messages:
                break
        self._await_process()
        self._final_commit()

    def _expire(self) -> None:
        """Quiet partitions: let the checks age their holes by wall time, and commit what that made.

        Runs on the loop thread while no batch is in process (the checks are never shared).
        """
        try:
            expired = self.checks.expire()
        except self.breakers.retryable() as exc:
            log.warning("aging quiet partitions' holes failed; retried when idle again", error=str(exc))
            return
        if expired:
            for topic, events in expired.items():
                self.checkpoint.add_expired(topic, events)
            self._commit()

    def _final_commit(self) -> None:
        """The clean stop's last commit; a dependency still down leaves the rest for the next run."""
        try:
            self._await_commit()
            if self._retry is not None:
                frozen, self._retry = self._retry, None
                frozen.commit()
                frozen.commit_group_offsets()
            if not self._reseek:
                self._commit(wait=True, final=True)
        except self.breakers.retryable() as exc:
            log.warning("final commit failed; the next run reads the uncommitted range again", error=str(exc))
            return
        if self._retry is not None:
            log.warning("final commit failed; the next run reads the uncommitted range again")
            return
        self.checks.close()

    def _await_commit(self) -> None:
        """Wait for the commit in flight; a fence (another writer owns the range) means re-seek."""
        if self._inflight is None:
            return
        (future, frozen), self._inflight = self._inflight, None
        try:
            future.result()
        except (StaleWriterError, StaleStateError) as exc:
            self._retry = None
            self._refence(exc)
        except self.breakers.retryable() as exc:  # a dependency is down: pause, keep, retry
            self._retry = frozen
            self._stall(exc)
        else:
            if frozen.attempts > 1:
                log.info("commit retried successfully", attempts=frozen.attempts, rows=frozen.rows)
            frozen.commit_group_offsets()

    def _commit(self, *, wait: bool = False, final: bool = False) -> None:
        """Freeze the checkpoint and commit it on the worker thread (one commit at a time)."""
        self._await_commit()
        if self._retry is not None or self._reseek:
            return  # commits stay in order: the failed one goes first, when the stall ends
        frozen = self.checkpoint.freeze(final=final)
        if frozen is not None:
            self._inflight = (self._executor.submit(frozen.commit), frozen)
        if wait:
            self._await_commit()

    def _refence(self, exc: StaleWriterError | StaleStateError) -> None:
        # Another consumer committed this range (we are a zombie after a rebalance): re-seek from
        # the tables' watermarks instead of writing anything twice.
        log.warning("fenced by another writer; re-seeking from the table watermarks", error=str(exc))
        try:
            self._reseek_now()
        except self.breakers.retryable() as error:  # the watermarks cannot be read yet
            self._reseek = True
            self._stall(error)

    def _reseek_now(self) -> None:
        """Drop everything not frozen and read again from the lowest committed watermark."""
        self.checkpoint.discard()
        assignment = self.consumer.assignment()
        self.checks.revoke([(p.topic, p.partition) for p in assignment])
        self._on_assign(self.consumer, assignment)
        self._reseek = False

    # -- backpressure ---------------------------------------------------------------------------
    def _stall(self, exc: BaseException) -> None:
        """Pause every partition and retry after the breakers' wait; the failed work is kept."""
        wait = max(self.breakers.retry_after(), 0.2)
        if self._stalled_until is None:
            self.stats.stalls += 1
            self._stall_cause = str(exc)
            log.warning(
                "dependency failed; consumption paused, work kept for a retry",
                error=str(exc),
                retry_in_s=round(wait, 2),
                commit_kept=self._retry is not None,
                reseek=self._reseek,
            )
        self._stalled_until = time.monotonic() + wait
        self.flow.apply(self.consumer, self.degradation.actions, stalled=True)
        self._write_status()

    def _recover(self, now: float) -> None:
        """One step out of a stall: the kept commit first, then a pending re-seek, then resume."""
        if self._inflight is not None:
            if self._inflight[0].done():
                self._await_commit()  # the retry's verdict (may stall again)
            return
        if self._retry is None and not self._reseek:
            self._resume()
            return
        if self._stalled_until is not None and now < self._stalled_until:
            return
        if self._retry is not None:
            frozen, self._retry = self._retry, None
            self._inflight = (self._executor.submit(frozen.commit), frozen)
            return
        try:
            self.breakers.get("state").call(self._reseek_now)
        except (StaleWriterError, StaleStateError, *self.breakers.retryable()) as exc:
            self._reseek = True
            self._stall(exc)
            return
        self._resume()

    def _resume(self) -> None:
        self._stalled_until = None
        self._stall_cause = ""
        self.flow.apply(self.consumer, self.degradation.actions, stalled=False)
        log.info("dependency back; consumption resumed")
        self._write_status()

    def _observe(self) -> None:
        """Measure the signals, let the level follow them, and apply the level's flow control."""
        owned = self.consumer.assignment()
        source = [p for p in owned if p.topic in self.source_topics]
        lags = partition_lags(self.consumer, source)
        for (topic, partition), lag in lags.items():
            LAG.labels(topic, str(partition)).set(lag)
        self.lag = sum(lags.values())
        self.peak_lag = max(self.peak_lag, self.lag)
        change = self.degradation.observe(
            Signals(lag=self.lag, batch_ratio=self.meter.ratio(), rss_bytes=self.rss())
        )
        if change is not None:
            self._level_changed(change)
        self.flow.apply(self.consumer, self.degradation.actions, stalled=self._stalled_until is not None)
        if change is not None or self.status_file.due():
            self._write_status()

    def _level_changed(self, change: LevelChange) -> None:
        self.checkpoint.max_age_s = change.actions.commit_interval(self.settings.lake.commit_interval_s)
        self.status_file.record(change.previous.name, change.level.name, change.cause, change.detail)

    @property
    def idle(self) -> bool:
        """Nothing read is left uncommitted (no buffer, no commit in flight or kept for a retry)."""
        checkpoint = getattr(self, "checkpoint", None)
        return (
            checkpoint is not None
            and not checkpoint.read_end
            and self._processing is None
            and self._inflight is None
            and self._retry is None
            and not self._reseek
        )

    def status(self) -> dict[str, Any]:
        """What ``k2 status`` shows: level, breakers, stall, deferral and back-fill counts."""
        spill = getattr(self, "spill", None)
        return {
            "degradation": self.degradation.status(),
            "signals": {
                "lag": self.lag,
                "peak_lag": self.peak_lag,
                "batch_ratio": round(self.meter.ratio(), 3),
            },
            "breakers": [dataclasses.asdict(b) for b in self.breakers.status()],
            "stalled": self._stalled_until is not None,
            "stall_cause": self._stall_cause,
            "tiers": self.tiers.counts(),
            "deferred": sum(spill.deferred.values()) if spill else 0,
            "spilled": sum(spill.durable.values()) if spill else 0,
            "backfilled": self.stats.backfilled,
            "stats": {
                "messages": self.stats.messages,
                "written": self.stats.written,
                "duplicates": self.stats.duplicates,
                "dead_letters": self.stats.dead_letters,
                "commits": self.checkpoint.commits if hasattr(self, "checkpoint") else 0,
                "stalls": self.stats.stalls,
            },
        }

    def _write_status(self, *, stopped: bool = False) -> None:
        try:
            self.status_file.write({**self.status(), "running": not stopped})
        except OSError as exc:  # a status display must never stop the ingest
            log.warning("status file not written", path=str(self.status_file.path), error=str(exc))


def _crash_hook(spec: str) -> Callable[[str], None]:
    """Test fault injection: SIGKILL this process at a named commit step (``step`` or ``step:n``)."""
    import os

    step, _, nth = spec.partition(":")
    remaining = [int(nth or 1)]

    def hook(name: str) -> None:
        if name == step:
            remaining[0] -= 1
            if remaining[0] <= 0:
                os.kill(os.getpid(), signal.SIGKILL)

    return hook
