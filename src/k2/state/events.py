"""Gap events as the tracker emits them: the fold's rows turned into the ``sequence_gaps`` frame."""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl

from k2.state.fold import SWEEP, GapEventRow
from k2.state.model import GAP_EVENT_SCHEMA

__all__ = ["detection_seconds", "events_frame"]

_EPOCH = date(1970, 1, 1)


def events_frame(kind: str, events: list[GapEventRow], batch: pl.DataFrame) -> pl.DataFrame:
    """The fold's gap-event rows as a ``GAP_EVENT_SCHEMA`` frame, lineage taken from ``batch``'s rows."""
    if not events:
        return pl.DataFrame(schema=GAP_EVENT_SCHEMA)
    # stable: keeps each tick's own emission order; a row's sweeps first, in key order
    events.sort(key=lambda e: (e[0], e[10], e[2], e[3], e[4], e[5]) if e[10] == SWEEP else (e[0], e[10]))
    rows, kinds, exs, syms, sess, firsts, lasts, det, rec, by, _, _ = zip(*events, strict=True)
    lineage = {
        c: batch.get_column(c).gather(list(rows))
        if c in batch.columns
        else pl.repeat(None, len(rows), dtype=t, eager=True)
        for c, t in (("_partition", pl.Int32), ("_offset", pl.Int64))
    }
    return pl.DataFrame(
        {
            "event": kinds,
            "kind": [kind] * len(events),
            "exchange": exs,
            "symbol": syms,
            "session": [_EPOCH + timedelta(days=s) for s in sess],
            "first_missing": firsts,
            "last_missing": lasts,
            "size": [b - a + 1 for a, b in zip(firsts, lasts, strict=True)],
            "detected_at": pl.Series(det, dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
            "recovered_at": pl.Series(rec, dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
            "recovered_by": pl.Series(by, dtype=pl.String),
            **lineage,
        },
        schema=GAP_EVENT_SCHEMA,
    )


def detection_seconds(events: list[GapEventRow]) -> tuple[float, ...]:
    """Seconds from each recorded hole's opening to its recording (exchange clock)."""
    return tuple((e[7] - e[11]) / 1e6 for e in events if e[1] == "opened" and e[11] > 0)
