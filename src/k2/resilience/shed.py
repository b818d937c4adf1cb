"""Which rows of a batch are written now and which are deferred to the spill topic.

Shedding never drops: a deferred row's original Kafka payload goes to the spill topic (see
``k2.resilience.spill``) and returns through the back-fill. The split runs after validation (bad
rows go to the DLQ whatever the level) and *before* the sequence and dedup checks, so deferred
ticks leave no trace in the sequence state: when they come back they are either in order or late
fills of the gaps their absence opened, and the gaps are marked recovered.
"""

from __future__ import annotations

import polars as pl

from k2.resilience.levels import Actions
from k2.resilience.tiers import PriorityTiers

__all__ = ["split"]


def split(frame: pl.DataFrame, tiers: PriorityTiers, actions: Actions) -> tuple[pl.Series, pl.Series]:
    """Boolean masks (keep, defer) over ``frame``'s rows, by the tier of each row's symbol.

    ``keep`` and ``defer`` are exact complements. With nothing to defer (NORMAL, SOFT) no tier is
    looked up at all, so the common case costs two constant columns.

    Args:
        frame: a batch with ``exchange`` and ``symbol`` columns (source topics only: a back-filled
            batch is never deferred again).
        tiers: the current priority tiers.
        actions: the current level's actions; ``defer_tiers`` picks the rows to defer.
    """
    if not actions.defer_tiers or frame.height == 0:
        n = frame.height
        return (
            pl.repeat(True, n, dtype=pl.Boolean, eager=True).alias("keep"),
            pl.repeat(False, n, dtype=pl.Boolean, eager=True).alias("defer"),
        )
    defer = tiers.of(frame).is_in(sorted(actions.defer_tiers)).alias("defer")
    return (~defer).alias("keep"), defer
