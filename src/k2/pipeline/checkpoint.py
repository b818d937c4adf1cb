"""One checkpoint: what the pipeline read since the last commit, and the order in which it is made durable.

Commit order (each step runs only if every earlier one succeeded; after a failure nothing more is
committed and the uncommitted range is read again from Kafka):

1. Flush the dead-letter producer and the spill: a message that went to the DLQ or the spill
   must be there before the offsets that skip it are stored.
2. Commit each tick table (``trades``, ``quotes``): the rows and the offsets they cover, as a
   compare-and-set on the table head. This is the step that makes the range "done", and the record
   of what was decided about it: a crash after it makes the next run rebuild the state from that
   range following these decisions (``deferrals.py``).
3. Commit the ``sequence_gaps`` table (gap events of both topics, with their offsets), after the
   ticks: its events follow from the decisions step 2 recorded, so a crash between the two leaves
   the gap table behind, and the rebuild derives the same events again and writes them. Were it
   first, its events would record decisions that a crash before step 2 lets the next run make
   differently (a range deferred now that was applied then: its events recorded twice once the
   back-fill brings it). Without events it commits only every 30 s, to move its watermark; the
   ranges it skips hold no events, and the state's watermark (step 4) never passes an event that
   is not yet in the table.
4. Commit the sequence/dedup state, fenced by the same offsets. It runs last, so the state's
   watermark is never ahead of any table; a crash before it means a replay re-derives it.
5. Commit the consumer group's offsets to Kafka: advisory only, for lag monitoring.

A crash between any two steps leaves each table at its own watermark. On restart the consumer
reads from the lowest watermark of all stages, and each stage skips what it already holds.

Each dependency call goes through its circuit breaker (``kafka`` for step 1, ``iceberg`` for steps
2 and 3, ``state`` for step 4). A frozen checkpoint whose commit failed with a retryable error is
kept whole and committed again later: the steps that already succeeded are skipped (they are
recorded in ``done``), so a retry neither loses nor repeats a step. A table append that landed
although the client saw an error makes the retry raise ``StaleWriterError``: the fencing path.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from k2.observability.logging import get_logger
from k2.pipeline.checks import BatchChecks
from k2.pipeline.errors import DeadLetterDeliveryError
from k2.pipeline.sinks import SinkBatch, TableSink
from k2.resilience.breaker import BreakerBoard
from k2.resilience.errors import SpillDeliveryError
from k2.types import Offsets

__all__ = ["Checkpoint", "FrozenCheckpoint", "crash_at_step"]

log = get_logger(__name__)


class Checkpoint:
    """The live checkpoint: buffers filled by the batches since the last freeze, and the commit steps.

    ``FrozenCheckpoint`` runs the steps through the small public interface below (``call``,
    ``reached``, ``flush_producers``, ``commit_group_offsets``, ``counted``), so that the protocol's
    side effects (breakers, crash hook, commit count) have one owner.
    """

    def __init__(
        self,
        *,
        gap_sink: TableSink,
        tick_sinks: list[TableSink],
        checks: BatchChecks,
        flush_dead_letters: Callable[[], int],
        commit_group_offsets: Callable[[Offsets], None],
        max_rows: int,
        max_age_s: float,
        flush_spill: Callable[[], int] | None = None,
        breakers: BreakerBoard | None = None,
    ) -> None:
        self.gap_sink = gap_sink
        self.tick_sinks = tick_sinks
        self.checks = checks
        self.breakers = breakers
        self._flush_dead_letters = flush_dead_letters
        self._flush_spill = flush_spill
        self._commit_group_offsets = commit_group_offsets
        self.max_rows = max_rows
        self.max_age_s = max_age_s
        self.read_end: Offsets = {}
        self.opened_at = time.monotonic()
        self.commits = 0
        self.last_commit_s: float | None = None  # duration of the last successful attempt (status file)
        self.last_commit_at: float | None = None  # its wall-clock end, epoch seconds (freshness)
        self.idle_advance_s = 30.0  # the gap table's watermark moves without rows this often
        self.crash_hook: Callable[[str], None] | None = None  # tests: crash at a named step

    @property
    def sinks(self) -> list[TableSink]:
        return [self.gap_sink, *self.tick_sinks]

    def record_read(self, end: Offsets) -> None:
        if not self.read_end:
            self.opened_at = time.monotonic()
        for tp, offset in end.items():
            self.read_end[tp] = max(self.read_end.get(tp, -1), offset)

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.tick_sinks)

    def due(self) -> bool:
        if not self.read_end:
            return False
        return self.rows >= self.max_rows or time.monotonic() - self.opened_at >= self.max_age_s

    def freeze(self, *, final: bool = False) -> FrozenCheckpoint | None:
        """Take everything read so far out of the live buffers, ready to commit; None if nothing.

        ``final`` (a clean stop) moves the gap table's watermark too, even without events, so that
        the next start does not re-read what this run already judged.
        """
        if not self.read_end and not (final and self.gap_sink.dirty):
            return None
        end = dict(self.read_end)
        self.read_end.clear()
        return FrozenCheckpoint(
            self,
            gaps=self.gap_sink.freeze(advance_only_after_s=None if final else self.idle_advance_s),
            ticks=[(sink, sink.freeze()) for sink in self.tick_sinks],
            state=self.checks.prepare(end),
            end=end,
        )

    def discard(self) -> None:
        """Forget everything uncommitted (after a failure or when partitions are lost)."""
        for sink in self.sinks:
            sink.clear()
        self.read_end.clear()

    def reached(self, step: str) -> None:
        """A commit step is done: tests' fault injection may kill the process here (``crash_hook``)."""
        if self.crash_hook is not None:
            self.crash_hook(step)

    def call(self, breaker: str, fn: Callable[..., object], *args: object) -> None:
        """Run one dependency call through its breaker (directly when there is no board)."""
        if self.breakers is None:
            fn(*args)
        else:
            self.breakers.get(breaker).call(fn, *args)

    def counted(self, seconds: float) -> None:
        """One frozen checkpoint went through steps 1-4, its last attempt taking ``seconds``."""
        self.commits += 1
        self.last_commit_s = seconds
        self.last_commit_at = time.time()

    def commit_group_offsets(self, end: Offsets) -> None:
        """Step 5: the consumer group's offsets (advisory, for lag monitoring)."""
        self._commit_group_offsets(end)

    def flush_producers(self) -> None:
        """Step 1: the dead letters and the spilled ticks must be in Kafka before offsets skip them.

        Raises:
            DeadLetterDeliveryError, SpillDeliveryError: some were not delivered.
        """
        undelivered = self._flush_dead_letters()
        if undelivered:
            raise DeadLetterDeliveryError(undelivered)
        if self._flush_spill is not None:
            unspilled = self._flush_spill()
            if unspilled:
                raise SpillDeliveryError(unspilled)


class FrozenCheckpoint:
    """One checkpoint taken out of the live buffers; ``commit`` runs the protocol above.

    It may run on a worker thread while the pipeline reads the next batches: commits stay strictly
    one after another (the runner waits for one before freezing the next), and Parquet encoding
    releases the GIL, so the overlap is real on two cores.
    """

    def __init__(
        self,
        owner: Checkpoint,
        *,
        gaps: SinkBatch | None,
        ticks: list[tuple[TableSink, SinkBatch | None]],
        state: Callable[[], None],
        end: Offsets,
    ) -> None:
        self.owner = owner
        self.gaps = gaps
        self.ticks = ticks
        self.state = state
        self.end = end
        self.done: set[str] = set()  # steps that succeeded: a retry skips them
        self.attempts = 0

    @property
    def rows(self) -> int:
        return sum(batch.rows for _, batch in self.ticks if batch is not None)

    def commit(self) -> None:
        """Steps 1-4; safe to call again after a retryable failure (done steps are skipped).

        Raises:
            DeadLetterDeliveryError, SpillDeliveryError: step 1 failed; nothing was committed.
            StaleWriterError, StaleStateError: another consumer owns a range (fenced).
            CircuitOpenError: a breaker refused the call; the step was not attempted.
            LakeError, StateStoreError, OSError: a dependency failed; retryable.
        """
        owner = self.owner
        self.attempts += 1
        started = time.monotonic()
        self._run("dlq-flushed", "kafka", owner.flush_producers)
        for sink, batch in self.ticks:
            if batch is not None:
                self._run(f"{sink.name}-committed", "iceberg", sink.commit_batch, batch)
            else:
                owner.reached(f"{sink.name}-committed")
        if self.gaps is not None:
            self._run("gaps-committed", "iceberg", owner.gap_sink.commit_batch, self.gaps)
        else:
            owner.reached("gaps-committed")
        self._run("state-committed", "state", self.state)
        owner.counted(time.monotonic() - started)

    def _run(self, step: str, breaker: str, fn: Callable[..., object], *args: object) -> None:
        if step not in self.done:
            self.owner.call(breaker, fn, *args)
            self.done.add(step)
        self.owner.reached(step)

    def commit_group_offsets(self) -> None:
        """Step 5, on the consumer's own thread: librdkafka must not see a commit from the worker
        thread while a rebalance callback on the consumer thread waits for that worker."""
        try:
            self.owner.commit_group_offsets(self.end)
        except Exception as exc:  # advisory: lag monitoring only
            log.warning("group offset commit failed", error=str(exc))


def crash_at_step(spec: str) -> Callable[[str], None]:
    """Test fault injection (``k2 ingest --crash-at``): SIGKILL this process at a named commit step
    (``step``, or ``step:n`` for its n-th time), to prove a crash between any two steps is safe."""
    step, _, nth = spec.partition(":")
    remaining = [int(nth or 1)]

    def hook(name: str) -> None:
        if name == step:
            remaining[0] -= 1
            if remaining[0] <= 0:
                os.kill(os.getpid(), signal.SIGKILL)

    return hook
