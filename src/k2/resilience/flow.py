"""Which assigned partitions are paused, for three independent reasons, applied as a difference.

The pipeline pauses partitions for three reasons that come and go separately:

1. the level says ``consume=False`` (CIRCUIT_BREAK): every partition;
2. the level says ``backfill=False`` (anything but NORMAL): the spill topics' partitions;
3. a commit failed or a breaker is open (``stalled``): every partition, until the commit succeeds.

One exception comes before the level: a spill partition that must be read again to rebuild the
state (its tick table is ahead of the state after a crash) runs whatever the level, and its source
partition waits until it has (``rebuild``). Back-filled ticks the committing run wrote must be in
the state before any new tick of their symbols is judged, or a re-sent copy of one of them would
fill its old gap and be written twice.

Kafka only knows "paused" or not, and forgets pauses when partitions are re-assigned. So the
wanted set is recomputed from all three each time and only the difference is sent to the consumer;
``assigned`` must be called from the assign callback because freshly assigned partitions start
un-paused. The consumer's position is untouched by pause/resume: a paused partition resumes exactly
where it stopped, so pausing loses nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from confluent_kafka import TopicPartition

from k2.resilience.levels import Actions
from k2.types import TopicPartition as TP

__all__ = ["FlowControl", "PausableConsumer"]


class PausableConsumer(Protocol):
    """The calls of ``confluent_kafka.Consumer`` that flow control makes."""

    def assignment(self) -> list[Any]: ...

    def pause(self, partitions: list[Any]) -> None: ...

    def resume(self, partitions: list[Any]) -> None: ...


class FlowControl:
    """Keeps the consumer's paused partitions equal to what the level and the breakers want.

    Args:
        spill_topics: the spill topics (back-fill sources), paused unless ``actions.backfill``.
    """

    def __init__(self, spill_topics: Iterable[str]) -> None:
        self.spill_topics = frozenset(spill_topics)
        self.paused: set[TP] = set()
        #: spill partition still to be read up to (exclusive) this offset, and the source it holds
        self.rebuilding: dict[TP, tuple[int, TP]] = {}

    def rebuild(self, spill: TP, end: int, source: TP) -> None:
        """Run ``spill`` up to ``end`` whatever the level, and hold ``source`` until it has."""
        self.rebuilding[spill] = (end, source)

    def read(self, spill: TP, next_offset: int) -> bool:
        """A spill partition was read up to ``next_offset``; True if that ended its rebuild."""
        pending = self.rebuilding.get(spill)
        if pending is None or next_offset < pending[0]:
            return False
        del self.rebuilding[spill]
        return True

    def wanted(self, assignment: Iterable[TP], actions: Actions, *, stalled: bool) -> set[TP]:
        """Partitions that should be paused now."""
        owned = set(assignment)
        if stalled or not actions.consume:
            return owned
        held = {source for _, source in self.rebuilding.values()} & owned
        if not actions.backfill:
            return held | {tp for tp in owned if tp[0] in self.spill_topics and tp not in self.rebuilding}
        return held

    def apply(
        self, consumer: PausableConsumer, actions: Actions, *, stalled: bool
    ) -> tuple[set[TP], set[TP]]:
        """Pause and resume the difference; returns (newly paused, resumed)."""
        owned = {(p.topic, p.partition) for p in consumer.assignment()}
        self.paused &= owned
        want = self.wanted(owned, actions, stalled=stalled)
        pause, resume = want - self.paused, self.paused - want
        if pause:
            consumer.pause(_kafka(pause))
        if resume:
            consumer.resume(_kafka(resume))
        self.paused = want
        return pause, resume

    def assigned(self, consumer: PausableConsumer, actions: Actions, *, stalled: bool) -> None:
        """Call after ``consumer.assign`` in the assign callback: new partitions start un-paused."""
        self.paused.clear()
        self.apply(consumer, actions, stalled=stalled)

    def revoked(self, partitions: Iterable[TP]) -> None:
        self.paused -= set(partitions)
        for tp in partitions:
            self.rebuilding.pop(tp, None)


def _kafka(tps: Iterable[TP]) -> list[TopicPartition]:
    return [TopicPartition(topic, partition) for topic, partition in sorted(tps)]
