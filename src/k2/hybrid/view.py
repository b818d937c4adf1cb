"""``View``: snapshot S of one table and the Kafka tail after it, and the windows queries ask of it.

A query takes one view (S, S's offsets, the tail read from them) and then decides its window,
which may depend on the view (``recent`` ends at the newest tick the view holds).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import polars as pl
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

from k2.hybrid.cache import TailRead
from k2.hybrid.result import Boundary
from k2.query.errors import InvalidParameterError
from k2.query.params import TimeRange
from k2.types import Offsets, StreamKind

__all__ = ["Anchor", "View", "WindowOf", "span_us"]

#: Where a "recent" window ends: the newest tick of the symbols (the stream's clock) or now.
Anchor = Literal["latest", "now"]
#: A query's window, decided once its view is taken (the second argument reads the view's tail rows).
WindowOf = Callable[["View", Callable[[], pl.DataFrame | None]], TimeRange]

_MINUTE_US = 60_000_000


@dataclass(frozen=True)
class View:
    """Snapshot S of one table and the Kafka tail after it, for some partitions."""

    kind: StreamKind
    table: Table
    snapshot: Snapshot | None
    offsets: Offsets
    tail: TailRead
    partitions: list[int]

    @property
    def boundary(self) -> Boundary:
        snap = self.snapshot
        committed = datetime.fromtimestamp(snap.timestamp_ms / 1000, UTC) if snap else None
        mine = {tp: self.offsets[tp] for tp in self.tail.parts if tp in self.offsets}
        return Boundary(self.kind, snap.snapshot_id if snap else None, committed, mine)

    def frames(self) -> list[pl.DataFrame]:
        return [f for part in self.tail.parts.values() for f in part.frames]


def span_us(minutes: float, max_minutes: float) -> int:
    """A window length in microseconds.

    Raises:
        InvalidParameterError: ``minutes`` is not in (0, ``max_minutes``].
    """
    if not 0 < minutes <= max_minutes:
        raise InvalidParameterError(
            "minutes",
            f"{minutes:g} is out of range: more than 0, at most {max_minutes:g} "
            "(hybrid.max_minutes); use /v1/trades for longer history",
            minutes,
        )
    return round(minutes * _MINUTE_US)
