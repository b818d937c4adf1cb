"""One checkpoint: what the pipeline read since the last commit, and the order in which it is made durable.

Commit order (each step runs only if every earlier one succeeded; after a failure nothing more is
committed and the uncommitted range is read again from Kafka):

1. Flush the dead-letter producer: a message that went to the DLQ must be there before the
   offsets that skip it are stored.
2. Commit the ``sequence_gaps`` table (gap events of both topics, with their offsets).
3. Commit each tick table (``trades``, ``quotes``): the rows and the offsets they cover, as a
   compare-and-set on the table head. This is the step that makes the range "done".
4. Commit the sequence/dedup state, fenced by the same offsets. It runs last, so the state's
   watermark is never ahead of any table; a crash before it means a replay re-derives it.
5. Commit the consumer group's offsets to Kafka: advisory only, for lag monitoring.

A crash between any two steps leaves each table at its own watermark. On restart the consumer
reads from the lowest watermark of all stages, and each stage skips what it already holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from k2.observability.logging import get_logger
from k2.pipeline.checks import BatchChecks
from k2.pipeline.errors import DeadLetterDeliveryError
from k2.pipeline.sinks import TableSink
from k2.types import Offsets

__all__ = ["Checkpoint"]

log = get_logger(__name__)


class Checkpoint:
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
    ) -> None:
        self.gap_sink = gap_sink
        self.tick_sinks = tick_sinks
        self.checks = checks
        self._flush_dead_letters = flush_dead_letters
        self._commit_group_offsets = commit_group_offsets
        self.max_rows = max_rows
        self.max_age_s = max_age_s
        self.read_end: Offsets = {}
        self.opened_at = time.monotonic()
        self.commits = 0
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

    def commit(self) -> bool:
        """Run the commit protocol; returns False when there was nothing to commit.

        Raises:
            DeadLetterDeliveryError: step 1 failed; nothing was committed.
            StaleWriterError: another consumer owns a range; the buffers were dropped.
        """
        if not self.read_end:
            return False
        undelivered = self._flush_dead_letters()
        if undelivered:
            raise DeadLetterDeliveryError(undelivered)
        self._step("dlq-flushed")
        self.gap_sink.commit()
        self._step("gaps-committed")
        for sink in self.tick_sinks:
            sink.commit()
            self._step(f"{sink.name}-committed")
        end = dict(self.read_end)
        self.checks.commit(end)
        self._step("state-committed")
        self.read_end.clear()
        self.commits += 1
        try:
            self._commit_group_offsets(end)
        except Exception as exc:  # advisory: lag monitoring only
            log.warning("group offset commit failed", error=str(exc))
        return True

    def discard(self) -> None:
        """Forget everything uncommitted (after a failure or when partitions are lost)."""
        for sink in self.sinks:
            sink.clear()
        self.read_end.clear()

    def _step(self, name: str) -> None:
        if self.crash_hook is not None:
            self.crash_hook(name)
