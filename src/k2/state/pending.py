"""Holes not yet recorded as gaps: what the sequence state knows and the gap table does not yet.

A hole lives in the state until the tick bound or the time bound records it (docs/state.md), so the
``sequence_gaps`` table alone cannot show it. The partition clocks index every key with a young
hole, so listing them costs one read per partition and one per such key, whatever the symbol count.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta

import polars as pl

from k2.state.base import SequenceStore
from k2.state.model import GAP_EVENT_SCHEMA

__all__ = ["PENDING_SCHEMA", "pending_holes"]

_EPOCH = date(1970, 1, 1)

#: The columns of ``/v1/gaps`` rows, ``status = 'pending'``; ``detected_at`` is when the hole opened.
PENDING_SCHEMA: dict[str, pl.DataType] = {
    **{k: v for k, v in GAP_EVENT_SCHEMA.items() if k not in ("event", "_partition", "_offset")},
    "status": pl.String(),
}


def pending_holes(store: SequenceStore, kinds: Iterable[str], partitions: int) -> pl.DataFrame:
    """Every young hole in the store's partition clocks, one row per missing range.

    Raises:
        StateStoreError: the store failed.
    """
    clocks = store.load_clocks([(kind, p) for kind in kinds for p in range(partitions)])
    keys = sorted({(kind, e, s) for (kind, _), c in clocks.items() for e, s, _ in c.holes})
    rows = []
    for (kind, ex, sym), st in sorted(store.load(keys).items()):
        for lo, hi, first, _, opened in st.ranges:
            if not first:
                rows.append((kind, ex, sym, _EPOCH + timedelta(days=st.session), lo, hi, hi - lo + 1, opened,
                             None, None, "pending"))  # fmt: skip
    frame = pl.DataFrame(rows, schema=list(PENDING_SCHEMA), orient="row")
    return frame.with_columns(pl.col("detected_at").cast(pl.Int64)).cast(PENDING_SCHEMA)  # type: ignore[arg-type]
