"""Degradation levels and the concrete actions the pipeline applies at each.

A level is only useful if it changes what the pipeline does, so every level maps to one
:class:`Actions` value whose fields are knobs the pipeline really has:

========== ============ ========== ============= ============= ======= =========
level      defer_tiers  batch ×    commit int. × skip_optional consume backfill
========== ============ ========== ============= ============= ======= =========
NORMAL     –            1          1             no            yes     yes
SOFT       –            1          1             yes           yes     no
GRACEFUL   {3}          1          1             yes           yes     no
AGGRESSIVE {2, 3}       N          M             yes           yes     no
CIRCUIT_…  {2, 3}       N          M             yes           no      no
========== ============ ========== ============= ============= ======= =========

(N and M are ``aggressive_batch_multiplier`` and ``aggressive_commit_multiplier``.) Deferred tiers
go to the spill topics and come back through the back-fill, which runs only at NORMAL: a back-fill
adds load, so it waits until there is room for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from k2.config.resilience import ResilienceSettings

__all__ = ["MAX_CONSUME_BATCH", "TIERS", "Actions", "Level", "actions_for"]

#: librdkafka's upper bound for ``Consumer.consume(num_messages=…)``.
MAX_CONSUME_BATCH = 1_000_000
#: Priority tiers: 1 is served first and deferred last.
TIERS = (1, 2, 3)


class Level(IntEnum):
    """Degradation levels, in rising order of severity (the value is the metric's gauge value)."""

    NORMAL = 0
    SOFT = 1
    GRACEFUL = 2
    AGGRESSIVE = 3
    CIRCUIT_BREAK = 4


@dataclass(frozen=True, slots=True)
class Actions:
    """What the pipeline does at one level.

    Attributes:
        defer_tiers: tiers whose ticks go to the spill topic instead of the tables (see ``split``).
        batch_multiplier: factor on ``pipeline.batch_max_messages`` for ``Consumer.consume``.
        commit_interval_multiplier: factor on ``lake.commit_interval_s`` (the row cap is kept, so
            memory stays bounded): fewer, larger Iceberg commits.
        skip_optional: skip work that does not change what is written (volume-tier refreshes,
            per-partition lag gauges, enrichment).
        consume: False pauses every assigned partition; buffered work is still committed and
            queries keep being served.
        backfill: whether the spill topics' partitions are resumed (True only at NORMAL).
    """

    defer_tiers: frozenset[int]
    batch_multiplier: int
    commit_interval_multiplier: float
    skip_optional: bool
    consume: bool
    backfill: bool

    def batch_size(self, base: int) -> int:
        """``consume()`` batch size at this level, within librdkafka's limit."""
        return max(1, min(base * self.batch_multiplier, MAX_CONSUME_BATCH))

    def commit_interval(self, base_s: float) -> float:
        """Commit interval at this level, from the configured one."""
        return base_s * self.commit_interval_multiplier


def actions_for(level: Level, settings: ResilienceSettings) -> Actions:
    """The actions of one level; see the module table for the whole mapping."""
    if level == Level.NORMAL:
        return Actions(frozenset(), 1, 1.0, skip_optional=False, consume=True, backfill=True)
    if level == Level.SOFT:
        return Actions(frozenset(), 1, 1.0, skip_optional=True, consume=True, backfill=False)
    if level == Level.GRACEFUL:
        return Actions(frozenset({3}), 1, 1.0, skip_optional=True, consume=True, backfill=False)
    return Actions(
        frozenset({2, 3}),
        settings.aggressive_batch_multiplier,
        settings.aggressive_commit_multiplier,
        skip_optional=True,
        consume=level != Level.CIRCUIT_BREAK,
        backfill=False,
    )
