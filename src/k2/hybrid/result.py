"""``HybridResult``: rows merged from Iceberg and the Kafka tail, and where the boundary lay."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl
import pyarrow as pa

from k2.hybrid.cache import TailRead
from k2.query.params import TimeRange
from k2.types import Offsets

__all__ = ["Boundary", "HybridResult"]


@dataclass(frozen=True)
class Boundary:
    """The Iceberg snapshot an answer was merged at, and the Kafka offsets stored in it.

    Attributes:
        table: "trades" or "quotes".
        snapshot_id: None when the table had no snapshot yet (then the whole stream is the tail).
        committed_at: the snapshot's commit time.
        offsets: the snapshot's ``k2.offsets`` for the partitions read (first tail offset of each).
    """

    table: str
    snapshot_id: int | None
    committed_at: datetime | None
    offsets: Offsets


@dataclass
class HybridResult:
    """An answer of the hybrid engine.

    Attributes:
        rows: ticks (or bars) in exchange-time order; a ``committed`` column (ticks) or an
            ``uncommitted`` count (bars) tells which came from the tail.
        window: the half-open exchange-time window answered.
        boundary: where Iceberg ends.
        tail: what was read from Kafka, per partition.
        history_rows: rows from Iceberg; tail_rows: rows from Kafka (after deduplication).
        duplicates: tail rows dropped as duplicates (the pipeline will not write them either).
    """

    kind: str
    rows: pl.DataFrame
    window: TimeRange
    boundary: Boundary
    tail: TailRead
    history_rows: int = 0
    tail_rows: int = 0
    duplicates: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def truncated(self) -> bool:
        return self.tail.truncated

    @property
    def truncated_reason(self) -> str | None:
        reasons = self.tail.reasons
        return "; ".join(reasons) if reasons else None

    @property
    def covered(self) -> Offsets:
        """Next offset after the answer, per partition read: every message below it is reflected."""
        return {tp: part.end for tp, part in self.tail.parts.items()}

    def table(self) -> pa.Table:
        return self.rows.to_arrow()

    def meta(self) -> dict[str, Any]:
        """JSON-ready description of the boundary (snapshot ids as strings, like the query API)."""
        b = self.boundary
        sid = None if b.snapshot_id is None else str(b.snapshot_id)
        return {
            "snapshot_id": sid,
            "snapshots": {b.table: sid},
            "committed_at": b.committed_at.isoformat() if b.committed_at else None,
            "boundary": [
                {"topic": t, "partition": p, "offset": b.offsets.get((t, p))}
                for (t, p) in sorted(self.tail.parts)
            ],
            "tail": [
                {
                    "topic": t,
                    "partition": p,
                    "start": part.start,
                    "end": part.end,
                    "high_watermark": part.high_watermark,
                    "truncated": part.truncated,
                }
                for (t, p), part in sorted(self.tail.parts.items())
            ],
            "history_rows": self.history_rows,
            "tail_rows": self.tail_rows,
            "duplicates_dropped": self.duplicates,
            "truncated": self.truncated,
            "truncated_reason": self.truncated_reason,
            "window": {
                "start": self.window.start.astimezone(UTC).isoformat(),
                "end": self.window.end.astimezone(UTC).isoformat(),
            },
            **self.extra,
        }
