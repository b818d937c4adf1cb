"""The partition exchange clocks of one batch, for the tracker's ``reorder_timeout``.

A hole ages on its partition's exchange clock (the newest exchange_ts seen on the partition in
arrival order), not on its own symbol's ticks, so a quiet symbol's gap surfaces when the feed moves
on. This module derives those clocks for a batch from the stored :class:`PartitionClock` and finds
where each hole crosses its deadline; ``tracker.py`` folds the keys with them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import polars as pl

from k2.state.fold import Crossing
from k2.state.groups import BatchGroups
from k2.state.model import NO_TIME, ClockKey, KeyState, PartitionClock, StateKey

__all__ = ["BatchClocks", "at_deadline", "partitions_of"]


def partitions_of(batch: pl.DataFrame) -> pl.Series:
    """Each row's Kafka partition; one clock (-1) for a batch without ``_partition``."""
    if "_partition" in batch.columns:
        return batch.get_column("_partition").cast(pl.Int64)
    return pl.repeat(-1, batch.height, dtype=pl.Int64, eager=True)


def at_deadline(row: int) -> Crossing:
    """A crossing for the wall-clock fallback: every hole ages at its own deadline, on ``row``."""

    def find(deadline: int) -> tuple[int, int]:
        return row, deadline

    return find


class BatchClocks:
    """The batch's partition clocks: per row, per partition at its end, and the keys due a sweep.

    ``at_row[i]`` is the partition clock once row i arrived (the running max of exchange_ts over
    the partition's rows in arrival order, from the stored clock). A key's hole opened at clock C0
    ages at the first row where that reaches C0 + timeout: ``crossing`` finds it by bisection.
    """

    __slots__ = ("_rows", "_runs", "at_row", "due", "end", "kind", "old", "part", "timeout")

    def __init__(
        self, kind: str, timeout: int, batch: pl.DataFrame, clocks: Mapping[ClockKey, PartitionClock]
    ) -> None:
        self.kind, self.timeout = kind, timeout
        part = partitions_of(batch).to_numpy()
        ts = batch.get_column("exchange_ts").dt.epoch("us").to_numpy()
        self.part = part
        self.at_row = np.empty(len(ts), dtype=np.int64)
        self.old: dict[int, PartitionClock] = {}
        self.end: dict[int, int] = {}
        self._rows: dict[int, np.ndarray] = {}
        self._runs: dict[int, np.ndarray] = {}
        single = len(part) == 0 or part.min() == part.max()
        for p in ([int(part[0])] if single else np.unique(part).tolist()) if len(part) else []:
            rows = np.arange(len(part)) if single else np.flatnonzero(part == p)
            old = self.old[p] = clocks.get((kind, p)) or PartitionClock()
            run = np.maximum.accumulate(ts[rows])
            if old.now != NO_TIME:
                np.maximum(run, old.now, out=run)
            self.at_row[rows] = run
            self._rows[p], self._runs[p] = rows, run
            self.end[p] = int(run[-1])
        self.due: dict[StateKey, int] = {}
        for p, old in self.old.items():
            aged = self.end[p] - timeout
            for ex, sym, opened in old.holes:
                if opened <= aged:
                    self.due[(kind, ex, sym)] = p

    def aged(self, p: int) -> int:
        """Holes opened at or before this clock age within the batch on partition p."""
        return self.end[p] - self.timeout

    def group_partitions(self, groups: BatchGroups) -> list[int]:
        """The partition of each key group (of its first row: a key lives in one partition)."""
        return self.part[groups.order[np.asarray(groups.starts, dtype=np.int64)]].tolist()  # type: ignore[no-any-return]

    def crossing(self, p: int) -> Callable[[int], tuple[int, int]]:
        rows, run = self._rows[p], self._runs[p]

        def find(deadline: int) -> tuple[int, int]:
            k = min(int(np.searchsorted(run, deadline, side="left")), len(run) - 1)
            return int(rows[k]), int(run[k])

        return find

    def advance(
        self, states: Mapping[StateKey, KeyState], folded: Mapping[StateKey, int]
    ) -> dict[ClockKey, PartitionClock]:
        """The partitions' new clocks: their end, and the young-hole index updated for folded keys."""
        holes = {p: {(e, s): t for e, s, t in old.holes} for p, old in self.old.items()}
        for key, p in folded.items():
            index = holes.setdefault(p, {})
            young = [r[4] for r in states[key].ranges if not r[2]]
            if young:
                index[(key[1], key[2])] = min(young)
            else:
                index.pop((key[1], key[2]), None)
        return {
            (self.kind, p): PartitionClock(
                self.end[p], tuple(sorted((e, s, t) for (e, s), t in holes.get(p, {}).items()))
            )
            for p in self.end
        }
