"""Control messages: K2's own marks in its tick topics, at a position only wall time can choose.

The sequence checks' wall-clock fallback (``state.reorder_timeout`` on a partition whose feed went
quiet) is not a function of the stream: nothing in it says when the feed stopped. Gaps recorded
straight from the clock would escape the offset fences every other write goes through, so an
ingester that lost its partitions, or one that crashed between the gap commit and the state
commit, could record a gap twice. Instead the owner appends an *expire marker* to the quiet
partition, and the checks sweep that partition's young holes when they read it. The sweep then has
an offset: a rebuild replays it exactly, and its gap events are fenced like any tick's. A marker
from a consumer that no longer owns the partition is harmless (its owner sweeps, or finds nothing).

The marker's key carries the partition's exchange clock when its owner decided (``marker_key``):
the sweep happens only if the clock is still that when the marker is read, so a marker that lands
behind newer ticks (a backlog, a paused partition) sweeps nothing. A ``k2.control`` header names it
for readers outside K2.

A marker is never a tick: every reader of the tick topics skips it before decoding (one C-level
scan of the batch's values when there is none).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["CONTROL_HEADERS", "EXPIRE_MARKER", "marker_clock", "marker_key", "marker_mask"]

#: The whole value of an expire marker (no Avro tick starts like this, and none is this short).
EXPIRE_MARKER = b"k2.control/expire-holes/v1"
#: For readers outside K2 (Kafka Connect, other consumers): this message is not a tick.
CONTROL_HEADERS = {"k2.control": "expire-holes"}
_KEY_PREFIX = b"k2.expire:"


def marker_key(clock: int) -> bytes:
    """The key of a marker decided when the partition's exchange clock was ``clock`` (µs)."""
    return _KEY_PREFIX + str(clock).encode()


def marker_clock(key: bytes | str | None) -> int | None:
    """The clock a marker's key carries; None if it carries none (such a marker sweeps nothing)."""
    raw = key.encode() if isinstance(key, str) else key
    if not raw or not raw.startswith(_KEY_PREFIX):
        return None
    try:
        return int(raw[len(_KEY_PREFIX) :])
    except ValueError:
        return None


def marker_mask(values: Sequence[bytes | None]) -> np.ndarray | None:
    """Which values are expire markers, or None if none is (the common case, one scan in C)."""
    if EXPIRE_MARKER not in values:
        return None
    return np.fromiter((v == EXPIRE_MARKER for v in values), dtype=bool, count=len(values))
