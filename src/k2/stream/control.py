"""Control messages: K2's own marks in its tick topics, at a position only wall time can choose.

The sequence checks' wall-clock fallback (``state.reorder_timeout`` on a partition whose feed went
quiet) is not a function of the stream: nothing in it says when the feed stopped. Gaps recorded
straight from the clock would escape the offset fences every other write goes through, so an
ingester that lost its partitions, or one that crashed between the gap commit and the state
commit, could record a gap twice. Instead the owner appends an *expire marker* to the quiet
partition, and the checks sweep that partition's young holes when they read it. The sweep then has
an offset: a rebuild replays it exactly, and its gap events are fenced like any tick's. A marker
from a consumer that no longer owns the partition is harmless (its owner sweeps, or finds nothing).

A marker is never a tick: every reader of the tick topics skips it before decoding (one C-level
scan of the batch's values when there is none).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["CONTROL_KEY", "EXPIRE_MARKER", "marker_mask"]

CONTROL_KEY = b"k2.control"
#: The whole value of an expire marker (no Avro tick starts like this, and none is this short).
EXPIRE_MARKER = b"k2.control/expire-holes/v1"


def marker_mask(values: Sequence[bytes | None]) -> np.ndarray | None:
    """Which values are expire markers, or None if none is (the common case, one scan in C)."""
    if EXPIRE_MARKER not in values:
        return None
    return np.fromiter((v == EXPIRE_MARKER for v in values), dtype=bool, count=len(values))
