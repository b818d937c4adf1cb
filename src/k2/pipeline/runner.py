"""The ingest pipeline: Kafka micro-batches → decode → validate (→ DLQ) → shed → checks → Iceberg.

Life cycle (after Quix Streams' ``Application.run``): the constructor opens the lake and the Kafka
clients and wires every collaborator, but subscribes to and reads nothing; ``run()`` installs
signal handlers that only request a stop, subscribes with assign/revoke/lost callbacks, loops, and
on a clean stop makes one final commit (the same ``Committer.flush`` a revoke makes). After a
failure nothing is committed: the uncommitted range is simply read again by the next run.

Three threads overlap: this one reads batch N+1 from Kafka while the process thread turns batch N
into rows (``batch.py``) and the commit thread commits the checkpoint before it (``committer.py``).
The consumer, freezing, seeking and pausing stay on this thread, and happen only between awaiting
one batch and handing over the next. The cyclic garbage collector is tuned for the run
(``gcpolicy.py``).

Backpressure is the governor's (``governor.py``): the degradation level follows lag, busy ratio
and memory. A dependency that fails *stalls* the pipeline instead of stopping it, and a state store
that fails while a batch is classified makes the pipeline re-read what it had not frozen yet (a
re-seek): the committer's state machine (``committer.py``). Any other error stops the pipeline.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import confluent_kafka
import polars as pl
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from k2.config import Settings
from k2.lake.catalog import open_catalog
from k2.lake.tables import GAPS, TICK_TABLES, ensure_tables
from k2.lake.writer import NO_OFFSET, TableWriter
from k2.observability.logging import get_logger
from k2.observability.memory import INGEST_MMAP_THRESHOLD, MemoryTrimmer
from k2.pipeline.batch import BatchOutcome, BatchProcessor, Decoded, PipelineStats
from k2.pipeline.checkpoint import Checkpoint, crash_at_step
from k2.pipeline.checks import BatchChecks, NoChecks
from k2.pipeline.committer import Committer
from k2.pipeline.consumer import (
    Batch,
    KafkaConsumer,
    consumer_config,
    fatal_error,
    is_fatal,
    last_offsets,
    use_native,
)
from k2.pipeline.deferrals import deferred_rows
from k2.pipeline.errors import ConsumerFencedError
from k2.pipeline.gcpolicy import tuned_gc
from k2.pipeline.governor import Governor, dependency_breakers
from k2.pipeline.native import NativeConsumer, native_version
from k2.pipeline.sinks import TableSink
from k2.pipeline.upkeep import Upkeep
from k2.resilience.spill import Spill, ensure_spill_topics, spill_topic
from k2.schemas.validate import Validator, known_symbols
from k2.state.factory import namespace_state
from k2.state.sweep import Sweeper
from k2.stream.admin import ensure_topics
from k2.stream.control import CONTROL_HEADERS, EXPIRE_MARKER, marker_key
from k2.stream.errors import ProduceError
from k2.stream.producer import TickProducer
from k2.types import Offsets
from k2.types import TopicPartition as TP

__all__ = ["Lake", "Pipeline", "PipelineStats", "open_lake"]

log = get_logger(__name__)

#: A consumer replaced more often than this within the window is a configuration error.
_MAX_RENEWALS = 3
_RENEWAL_WINDOW_S = 600.0


@dataclass(frozen=True)
class Lake:
    """The pipeline's side of the lake, opened once: the tables' sinks, their upkeep, the validator."""

    tick_sinks: list[TableSink]
    gap_sink: TableSink
    upkeep: Upkeep
    validator: Validator


def open_lake(settings: Settings, topics: set[str]) -> Lake:
    """Open the catalog, ensure the tables, and give each table its sink (``topics``: all subscribed)."""
    catalog = open_catalog(settings)
    ns, kafka = settings.lake.namespace, settings.kafka
    tables = ensure_tables(catalog, ns)
    tick_sinks = [
        TableSink(
            TableWriter(catalog, f"{ns}.{kind}", sort_by=("symbol", "exchange_ts", "sequence")),
            {kafka.topic(kind), spill_topic(kafka, kind)},  # spill offsets in snapshots
            tables[kind].schema().as_arrow(),
        )
        for kind in TICK_TABLES
    ]
    return Lake(
        tick_sinks=tick_sinks,
        gap_sink=TableSink(TableWriter(catalog, f"{ns}.{GAPS}"), topics, tables[GAPS].schema().as_arrow()),
        upkeep=Upkeep(settings.lake, [tables[name] for name in (*TICK_TABLES, GAPS)]),
        validator=Validator(settings.pipeline.max_clock_skew_s, known_symbols(tables["reference"])),
    )


class Pipeline:
    """One consumer process of the ingest group.

    The constructor opens the catalog, ensures the tables and topics, and wires every collaborator;
    nothing is subscribed or read before ``run()``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        checks: BatchChecks | None = None,
        crash_at: str | None = None,
    ) -> None:
        self.settings = settings
        self.kafka = kafka = settings.kafka
        self.checks = checks or NoChecks()
        self.stats = PipelineStats()
        self._running = False
        self._failed = False
        self._assigned = False
        # one batch is processed while the consumer reads the next (module docstring)
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="k2-process")
        self._processing: Future[BatchOutcome] | None = None
        self._epoch = 0  # bumped by every (re)assignment: batches read before it are read again
        self._submitted = 0
        self._last_message_at = time.monotonic()
        self._behind_said = False  # the 'quiet but not caught up' line, once a run
        self._fatal: KafkaError | None = None  # set by librdkafka's error callback
        self._generation = 0  # of the consumer: a replaced one's late callbacks are ignored
        self._said: dict[int, float] = {}  # error code -> when last logged (non-fatal errors)
        self._starts: dict[TP, int] = {}  # the offset each partition was last assigned from
        self._renewals: list[float] = []  # when the consumer was replaced after a fatal error
        self._on_batch: Callable[[PipelineStats], None] | None = None
        # the state's rebuild after a crash: per source partition, the tables' watermark to reach
        self._replaying: dict[TP, int] = {}
        self._replayed: list[TP] = []  # read to their watermark, in the batch now in process
        self._replay = (0.0, 0)  # when it began, ticks to read again
        self._quiet_checked = 0.0  # monotonic time the checks were last asked for quiet partitions
        self.source_topics = {kafka.topic(kind): kind for kind in TICK_TABLES}
        self.spill_topics = {spill_topic(kafka, kind): kind for kind in TICK_TABLES}
        self.topics = {**self.source_topics, **self.spill_topics}  # subscribed; routed by kind

        lake = open_lake(settings, set(self.topics))
        self.upkeep = lake.upkeep
        state = settings.state
        self.sweeper = (
            Sweeper(namespace_state(settings)[0], state.idle_days, state.sweep_every_s)
            if state.backend == "redis" and state.sweep_every_s > 0 and not isinstance(self.checks, NoChecks)
            else None
        )  # idle symbols' Redis state (k2.state.sweep)
        ensure_topics(kafka)
        ensure_spill_topics(kafka)  # co-partitioned with the sources: same partition counts
        self.producer = TickProducer(kafka)
        self.spill = Spill(kafka)
        self._consumer_config = consumer_config(settings)
        #: librdkafka polled into columns by K2's Rust extension, or confluent-kafka (``native.py``)
        self.native = use_native(settings.pipeline.consumer)
        self.consumer = self._consumer()
        log.info("kafka consumer", kind="native" if self.native else "confluent-kafka",
                 librdkafka=native_version() if self.native else confluent_kafka.libversion()[0])  # fmt: skip
        self.breakers = breakers = dependency_breakers(settings.resilience)
        self.checkpoint = Checkpoint(
            gap_sink=lake.gap_sink,
            tick_sinks=lake.tick_sinks,
            checks=self.checks,
            flush_dead_letters=lambda: self.producer.flush(30.0),
            commit_group_offsets=self._commit_group_offsets,
            max_rows=settings.lake.commit_rows,
            max_age_s=settings.lake.commit_interval_s,
            flush_spill=lambda: self.spill.flush(30.0),
            breakers=breakers,
        )
        if crash_at:
            self.checkpoint.crash_hook = crash_at_step(crash_at)
        self.governor = Governor(
            settings,
            consumer=self.consumer,
            checkpoint=self.checkpoint,
            spill=self.spill,
            stats=self.stats,
            breakers=breakers,
            source_topics=set(self.source_topics),
            spill_topics=set(self.spill_topics),
        )
        self.committer = Committer(
            self.checkpoint, breakers, self.governor, self._reseek, clock=time.monotonic
        )
        self.process = BatchProcessor(
            topics=self.topics,
            source_topics=self.source_topics,
            spill_topics=self.spill_topics,
            sinks_by_topic={topic: sink for sink in lake.tick_sinks for topic in sink.topics},
            checkpoint=self.checkpoint,
            checks=self.checks,
            validator=lake.validator,
            producer=self.producer,
            spill=self.spill,
            tiers=self.governor.tiers,
            degradation=self.governor.degradation,
            breakers=breakers,
            stats=self.stats,
        )

    # -- partition life cycle -------------------------------------------------------------------
    def _on_assign(self, consumer: KafkaConsumer, partitions: list[TopicPartition]) -> None:
        error = self._await_process()
        if error is not None:  # its work goes with the re-seek this owes, once the store answers
            self.committer.stall(error, reseek=True)
        self._epoch += 1
        tps: list[TP] = [(p.topic, p.partition) for p in partitions]
        marks: dict[TP, list[int]] = {tp: [] for tp in tps}
        for sink in self.checkpoint.sinks:
            sink.reset(tps)
            for tp in tps:
                if tp[0] in sink.topics:
                    marks[tp].append(sink.watermark(tp))
        tokens = self.checks.assign(tps)
        for tp, offset in tokens.items():
            marks[tp].append(offset)
        starts = {tp: min(offsets, default=NO_OFFSET) for tp, offsets in marks.items()}
        for p in partitions:
            start = starts[(p.topic, p.partition)]
            p.offset = OFFSET_BEGINNING if start == NO_OFFSET else start
            self._starts[(p.topic, p.partition)] = p.offset
        if not isinstance(self.checks, NoChecks):
            self._prepare_rebuild(tps, tokens, starts)
        self._last_message_at = time.monotonic()  # idleness counts from owning partitions, not joining
        self._assigned = True
        log.info(
            "partitions assigned", partitions={f"{p.topic}[{p.partition}]": p.offset for p in partitions}
        )
        consumer.assign(partitions)
        self.governor.assigned()

    def _prepare_rebuild(self, tps: list[TP], tokens: Offsets, starts: dict[TP, int]) -> None:
        """Where the state is behind a tick table (a crash between their commits, or a lost store),
        the range between is read again to rebuild it, and must be judged as the committing run
        judged it: the source rows it deferred stay out of the checks (``deferrals.py``), and the
        spill rows it back-filled go in before any new row of their partition (``FlowControl``)."""
        began = time.monotonic()
        decided, flow = self.process.deferred_before, self.governor.flow
        for tp in tps:
            decided.pop(tp, None)
            flow.rebuilding.pop(tp, None)
        owned = set(tps)
        self._replaying, self._replayed, replay = {}, [], 0
        for tp in tps:
            sink = self.process.sinks_by_topic.get(tp[0])
            state, end = max(tokens.get(tp, NO_OFFSET), 0), sink.watermark(tp) if sink else NO_OFFSET
            if sink is None or end <= state:
                continue
            if (kind := self.source_topics.get(tp[0])) is not None:
                self._replaying[tp] = end
                replay += end - state
                spill = spill_topic(self.kafka, kind)
                deferred = deferred_rows(
                    self.settings, sink.writer, kind=kind, topic=tp[0], partition=tp[1], start=state, end=end,
                    spill=spill, spill_from=starts.get((spill, tp[1]), NO_OFFSET),
                )  # fmt: skip
                if deferred:
                    decided[tp] = pl.Series("offset", sorted(deferred), dtype=pl.Int64).implode()
            elif (kind := self.spill_topics.get(tp[0])) is not None:
                source = (self.kafka.topic(kind), tp[1])
                low, _high = self.consumer.get_watermark_offsets(TopicPartition(*tp), timeout=30.0)
                if source in owned and low < end:  # retention may have taken the range already
                    flow.rebuild(tp, end, source)
                    log.info("spill partition read again before its source", spill=f"{tp[0]}[{tp[1]}]",
                             until=end, source=f"{source[0]}[{source[1]}]")  # fmt: skip
        if self._replaying:
            self._replay = (began, replay)
            log.info("rebuilding the sequence state from the tables' committed range", messages=replay,
                     partitions=len(self._replaying))  # fmt: skip

    def _track_replay(self, messages: Batch) -> None:
        """Note the source partitions this batch reads back to their tables' watermark (the state's
        rebuild); logged once the batch is processed (``_replay_done``)."""
        for tp, offset in last_offsets(messages).items():
            if tp in self._replaying and offset + 1 >= self._replaying[tp]:
                del self._replaying[tp]
                self._replayed.append(tp)

    def _replay_done(self) -> None:
        """The batch that finished a rebuild was processed: say how long the rebuild took."""
        self._replayed = []
        if not self._replaying:
            began, ticks = self._replay
            log.info("sequence state rebuilt", seconds=round(time.monotonic() - began, 3), messages=ticks)

    def _track_rebuild(self, messages: Batch) -> None:
        """Release a source partition once its spill partition was read to the committed watermark."""
        flow = self.governor.flow
        for tp, offset in last_offsets(messages).items():
            if tp in flow.rebuilding and flow.read(tp, offset + 1):
                log.info("spill partition rebuilt; its source runs again", spill=f"{tp[0]}[{tp[1]}]")

    def _on_revoke(self, consumer: KafkaConsumer, partitions: list[TopicPartition]) -> None:
        if self._failed:
            self._drain_process()
        else:  # the batch in process belongs to this checkpoint: commit them together
            self.committer.flush(live=self._await_process() is None)
        self._forget([(p.topic, p.partition) for p in partitions])
        consumer.unassign()
        log.info("partitions revoked", count=len(partitions))

    def _on_lost(self, consumer: KafkaConsumer, partitions: list[TopicPartition]) -> None:
        self._drain_process()
        self._forget([(p.topic, p.partition) for p in partitions])
        consumer.unassign()
        log.warning("partitions lost; uncommitted work dropped", count=len(partitions))

    def _forget(self, tps: list[TP]) -> None:
        """Drop every uncommitted thing of partitions that moved away (their new owner replays them)."""
        self.checkpoint.discard()
        self.checks.revoke(tps)
        for tp in tps:
            self.process.deferred_before.pop(tp, None)
        self.governor.revoked(tps)
        self.committer.forget()
        self._epoch += 1

    def _reseek(self) -> None:
        """Drop everything not frozen and read again from the lowest committed watermark."""
        self.checkpoint.discard()
        assignment = self.consumer.assignment()
        self.checks.revoke([(p.topic, p.partition) for p in assignment])
        self._on_assign(self.consumer, assignment)

    def _commit_group_offsets(self, end: Offsets) -> None:
        offsets = [TopicPartition(t, p, o) for (t, p), o in end.items()]
        if offsets:
            self.consumer.commit(offsets=offsets, asynchronous=True)

    # -- the process thread ----------------------------------------------------------------------
    def _submit(self, batch: Batch | Decoded, messages: int) -> None:
        """Hand a batch, decoded or not, to the process thread (the previous one must have been awaited)."""
        assert self._processing is None
        self._submitted += messages
        self._processing = self._worker.submit(self.process, batch)

    def _await_process(self) -> BaseException | None:
        """Wait for the batch in process and fold its outcome into the loop's state.

        Returns the retryable failure (the state store while classifying) that makes its work,
        and everything not frozen, be read again; any other failure is raised here, on the
        consumer thread.
        """
        if self._processing is None:
            return None
        future, self._processing = self._processing, None
        try:
            outcome = future.result()
        except self.breakers.retryable() as exc:
            return exc
        if outcome.had_ticks:
            self._last_message_at = time.monotonic()
        if outcome.fatal is not None:  # replaced at the top of the next loop
            self._fatal = outcome.fatal
        self.governor.meter.add_busy(outcome.seconds)
        if self._on_batch is not None:
            self._on_batch(self.stats)
        return None

    def _drain_process(self) -> None:
        """Wait for the batch in process and ignore how it ended (its work is being dropped)."""
        try:
            self._await_process()
        except Exception as exc:  # the run is failing or the partitions are gone anyway
            log.debug("batch dropped with its partitions", error=str(exc))

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
        self._on_batch = on_batch
        previous = {s: signal.signal(s, self.stop) for s in (signal.SIGINT, signal.SIGTERM)}
        self._running = True
        began = self._last_message_at = time.monotonic()
        # Commits free large Arrow/Parquet buffers on two threads: without trimming, glibc keeps
        # them in fragmented arenas and RSS creeps up (k2.observability.memory, as in the API).
        trimmer = MemoryTrimmer(mmap_threshold=INGEST_MMAP_THRESHOLD)
        trimmer.start()
        try:
            with tuned_gc(self.settings.pipeline.gc_gen0_threshold):
                self._loop(began, idle_timeout_s, max_seconds, max_messages)
        except BaseException:
            self._failed = True
            raise
        finally:
            trimmer.stop()
            self._drain_process()
            self._worker.shutdown(wait=True)
            self.committer.shutdown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.consumer.close()
            self.producer.close()
            self.spill.close()
            self.governor.write_status(stopped=True)
        self.stats.commits = self.checkpoint.commits
        return self.stats

    def _subscribe(self) -> None:
        self.consumer.subscribe(
            list(self.topics), on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )

    def _consumer(self) -> KafkaConsumer:
        """A consumer whose error callback knows which generation it belongs to."""
        self._generation += 1
        generation = self._generation
        config = {**self._consumer_config, "error_cb": lambda e: self._on_kafka_error(e, generation)}
        return NativeConsumer(config) if self.native else Consumer(config)

    def _on_kafka_error(self, error: KafkaError, generation: int) -> None:
        if generation != self._generation:  # the replaced consumer, reporting while it closes
            return
        if is_fatal(error):
            self._fatal = error
            return
        # An error callback silences librdkafka's own logging: say it, once a minute per kind
        # (all brokers down, authentication refused, a transport error).
        now = time.monotonic()
        if now - self._said.get(error.code(), -60.0) >= 60.0:
            self._said[error.code()] = now
            log.warning("kafka consumer error", error=error.str(), code=error.name())

    def _renew_consumer(self) -> None:
        """Replace a consumer that librdkafka declared unusable, and join the group again.

        A static member (``group.instance.id``) is fenced when the coordinator sees a newer join
        with its instance id: a coordinator that failed over mid-rebalance does that to a live
        process (SIGKILLing a broker of a 3-node cluster fenced an ingester, which then sat idle
        and stopped at 141,395 of 200,545 trades). Its partitions are dropped like lost ones (the
        next owner, this process again, replays them from the tables' watermarks), and a new
        consumer joins. A fence that keeps coming back means two processes share the instance id:
        that is a configuration error, raised after 3 renewals in 10 minutes.
        """
        error, self._fatal = self._fatal, None
        now = time.monotonic()
        self._renewals = [t for t in self._renewals if now - t < _RENEWAL_WINDOW_S] + [now]
        message = error.str() if error is not None else "fatal error"
        if len(self._renewals) > _MAX_RENEWALS:
            raise ConsumerFencedError(
                len(self._renewals), _RENEWAL_WINDOW_S, self.settings.pipeline.instance_id, message
            )
        try:
            owned = [(p.topic, p.partition) for p in self.consumer.assignment()]
        except KafkaException:
            owned = []
        self._drain_process()
        self._forget(owned)  # also when the lost callback already ran: it only drops uncommitted work
        self._assigned = False
        try:
            self.consumer.close()
        except (KafkaException, RuntimeError) as exc:
            log.info("closing the unusable consumer failed", error=str(exc))
        self.consumer = self.governor.consumer = self._consumer()
        self._subscribe()
        log.warning(
            "the Kafka consumer hit a fatal error; a new one joins the group",
            error=message,
            renewals=len(self._renewals),
            dropped_partitions=len(owned),
        )

    def _caught_up(self, idle: float, idle_timeout_s: float) -> bool:
        """Whether a quiet spell may end the run: nothing is left to read, by the broker's last word.

        No message for ``idle_timeout_s`` is not the end of the stream while the partitions' high
        watermarks stand past the positions: a partition leader that died mid-stream stalls every
        fetch until its successor is elected (SIGKILLing a broker of a 3-node cluster stopped an
        ingester at 163,061 of 200,545 trades). It still ends after 4 x ``idle_timeout_s``, said
        aloud, so a cluster that is gone for good does not keep a bounded run alive.
        """
        behind = self._unread()
        if behind == 0:
            return True
        if idle > 4 * idle_timeout_s:
            log.warning(
                "stopping idle with messages unread or unknown: Kafka delivered nothing although the "
                "high watermarks are ahead or not known; the next run reads them",
                unread=behind,
                idle_s=round(idle, 1),
            )
            return True
        if not self._behind_said:
            self._behind_said = True
            log.info("quiet but not caught up: waiting for Kafka", unread=behind, idle_s=round(idle, 1))
        return False

    def _unread(self) -> int | None:
        """Messages left to read on the owned source partitions; None when a partition cannot say.

        Unlike the governor's lag, a partition that has delivered nothing yet counts: librdkafka
        has no position for it (a fresh assignment, a new consumer after a fence), so its start is
        the offset it was assigned from. A partition whose watermark is not known yet (its leader is
        being elected) makes the answer unknown. An empty partition (low = high) has nothing to read.
        """
        try:
            owned = [p for p in self.consumer.assignment() if p.topic in self.source_topics]
            unread = 0
            for tp in self.consumer.position(owned):
                low, high = self.consumer.get_watermark_offsets(tp, cached=True)
                if high < 0:
                    return None
                start = tp.offset if tp.offset >= 0 else self._starts.get((tp.topic, tp.partition), -1)
                if start < 0:  # from the beginning: what retention kept
                    start = low if low >= 0 else high
                unread += max(0, high - start)
            return unread
        except KafkaException:
            return None

    def _loop(
        self, began: float, idle_timeout_s: float | None, max_seconds: float | None, max_messages: int | None
    ) -> None:
        """Read batch N+1 while batch N is processed and the checkpoint before it commits.

        Everything that freezes, seeks or pauses runs here, between awaiting batch N and handing
        over N+1, so the process thread never sees the checkpoint change under it.
        """
        self._subscribe()
        base_batch = self.settings.pipeline.batch_max_messages
        committer = self.committer
        while self._running:
            messages = self.consumer.consume(self.governor.batch_size(base_batch),
                                             self.settings.pipeline.poll_timeout_s)  # fmt: skip
            epoch = self._epoch  # rebalance callbacks ran inside consume(); these messages follow them
            if messages and (fatal := fatal_error(messages)) is not None:
                self._fatal = fatal  # acted on below, whether this batch is processed or dropped
            busy_from = time.perf_counter()
            # While the process thread still applies the batch before (the checks are the slow
            # stage), decode this one here: two cores instead of one. When it is idle (no checks:
            # reading is the slow stage), it decodes, beside the next read.
            busy = self._processing is not None and not self._processing.done()
            decoded = self.process.decode(messages) if messages and busy else None
            now = time.monotonic()
            error = self._await_process()
            if self._fatal is not None:  # from consume()'s callback or the last batch: unusable
                self._renew_consumer()  # drops this read and whatever the error owed: all re-read
                continue
            if self._replayed and error is None:
                self._replay_done()
            if error is not None:  # the classification failed: drop unfrozen work, re-read it later
                committer.stall(error, reseek=True)
            if committer.stalled:
                committer.recover(now)
                self._last_message_at = now  # a stall is not idleness: it must not end the run
            elif self.checkpoint.due():
                committer.commit()
                if self.upkeep.due():  # queued behind that commit on the one worker: never concurrent
                    committer.after_commit(self.upkeep.run)
            else:
                committer.poll()  # surface a failure or a fence without waiting for the next commit
            if self.sweeper is not None and self.sweeper.due():
                self.sweeper.start()  # compare-and-delete: safe beside commits; also while idle
            # nothing is in process here: the checks may be asked which partitions went quiet (once
            # a second while others flow: a quiet trades partition beside busy quotes ages too)
            if not committer.stalled and (not messages or now - self._quiet_checked >= 1.0):
                self._quiet_checked = now
                self._expire()
            if messages and self.governor.flow.rebuilding and epoch == self._epoch:
                self._track_rebuild(messages)
            # A re-seek (owed, or done above) reads these messages again from the watermarks.
            if messages and not committer.reseek_owed and epoch == self._epoch:
                if self._replaying:
                    self._track_replay(messages)
                self._submit(messages if decoded is None else decoded, len(messages))
            self.governor.meter.add_busy(time.perf_counter() - busy_from)
            self.governor.observe()
            if self.governor.deferring:
                self._last_message_at = now  # deferred work (back-fill) is still to come
            idle = now - self._last_message_at
            if (
                idle_timeout_s is not None
                and self._assigned
                and idle > idle_timeout_s
                and self._caught_up(idle, idle_timeout_s)
            ):
                break
            if max_seconds is not None and now - began > max_seconds:
                break
            if max_messages is not None and self._submitted >= max_messages:
                break
        # The clean stop's last commit; a dependency still down leaves the rest for the next run.
        if committer.flush(live=self._await_process() is None):
            self.checks.close()
        else:
            self.stats.uncommitted = True

    def _expire(self) -> None:
        """Quiet partitions with young holes: append an expire marker to each (``k2.stream.control``).

        The checks sweep the holes when they read the marker back, so the wall-clock fallback
        goes through the same offsets, fences and rebuilds as every tick. Runs on the loop thread
        while idle; a marker that cannot be sent is tried again at the next idle moment.
        """
        try:
            quiet = self.checks.quiet(self.source_topics)
        except self.breakers.retryable() as exc:
            log.warning("aging quiet partitions' holes failed; retried when idle again", error=str(exc))
            return
        sent = False
        for (topic, partition), clock in quiet:
            if topic not in self.source_topics:
                continue
            try:
                self.producer.send_raw(
                    topic, marker_key(clock), EXPIRE_MARKER, CONTROL_HEADERS, partition=partition
                )
                sent = True
            except ProduceError as exc:
                self.checks.requiet((topic, partition))
                log.warning("cannot append an expire marker; retried when idle again",
                            topic=topic, partition=partition, error=str(exc))  # fmt: skip
        if sent:
            self.producer.poll(0)

    @property
    def idle(self) -> bool:
        """Nothing read is left uncommitted (no buffer, no commit in flight or kept for a retry)."""
        return not self.checkpoint.read_end and self._processing is None and self.committer.settled

    @property
    def peak_lag(self) -> int:
        return self.governor.peak_lag

    def status(self) -> dict[str, Any]:
        """What ``k2 status`` shows (``Governor.status``)."""
        return self.governor.status()
