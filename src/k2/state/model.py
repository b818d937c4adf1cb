"""The state of one sequence key, the verdict vocabulary, and the gap-event schema.

A key is ``(kind, exchange, symbol)``; the session lives in the value, because only one session of a
symbol is live at a time and keying by symbol keeps the store's size bounded by the symbol count.
The previous session is kept beside the current one (its high-water mark and its open gaps) so
that late ticks of yesterday can still fill yesterday's gaps after today's first tick.

Missing ranges are ``(lo, hi, gap_first, gap_last, detected_us)`` tuples, ascending and disjoint,
all below the high-water mark. ``gap_first == 0`` marks a *hole* (still young, not yet a gap);
otherwise the range is what remains unfilled of the recorded gap ``[gap_first, gap_last]``
detected at ``detected_us`` (exchange time, µs since the epoch). Sequences start at 1, so 0 is free
to mean "not recorded".
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import polars as pl

__all__ = [
    "GAP_EVENTS",
    "GAP_EVENT_SCHEMA",
    "VERDICT",
    "VERDICTS",
    "KeyState",
    "Range",
    "StateKey",
    "decode_state",
    "encode_state",
]

#: (kind, exchange, symbol)
StateKey = tuple[str, str, str]
#: (lo, hi, gap_first, gap_last, detected_us); gap_first == 0: a young hole
Range = tuple[int, int, int, int, int]

#: Verdict names, in code order (code 0 is the common case so a zeroed array is "all in order").
VERDICTS: tuple[str, ...] = (
    "in_order",
    "gap",
    "duplicate",
    "out_of_order",
    "late_fill",
    "session_reset",
    "late_session",
)
VERDICT = pl.Enum(list(VERDICTS))
GAP_EVENTS: tuple[str, ...] = ("opened", "recovered")

#: One row per gap event; the lead appends them to the Iceberg table ``sequence_gaps``.
GAP_EVENT_SCHEMA: dict[str, pl.DataType] = {
    "event": pl.Enum(list(GAP_EVENTS)),
    "kind": pl.String(),
    "exchange": pl.String(),
    "symbol": pl.String(),
    "session": pl.Date(),
    "first_missing": pl.Int64(),
    "last_missing": pl.Int64(),
    "size": pl.Int64(),
    "detected_at": pl.Datetime("us", "UTC"),
    "recovered_at": pl.Datetime("us", "UTC"),
    "recovered_by": pl.String(),
    # lineage: the Kafka position of the tick that caused the event (null if the batch had none)
    "_partition": pl.Int32(),
    "_offset": pl.Int64(),
}


class KeyState(NamedTuple):
    """Sequence state of one (kind, exchange, symbol); immutable, compared by value in tests."""

    session: int
    """Current session, days since 1970-01-01."""
    hwm: int
    """Highest sequence seen in the current session (0: none yet)."""
    ranges: tuple[Range, ...] = ()
    """Missing ranges of the current session below ``hwm``."""
    prev_session: int | None = None
    prev_hwm: int = 0
    prev_ranges: tuple[Range, ...] = ()
    """Recorded gaps of the previous session still open (late ticks may fill them)."""

    def open_gaps(self) -> int:
        """Recorded gaps not yet recovered, in both sessions (a split gap counts once)."""
        if not self.ranges and not self.prev_ranges:
            return 0
        cur = {r[2] for r in self.ranges if r[2]}
        prev = {r[2] for r in self.prev_ranges}
        return len(cur) + len(prev)


# Binary layout, little-endian: version, session, hwm, prev_session (INT32_MIN: none), prev_hwm,
# range count, prev range count; then 5 x int64 per range. 33 bytes for a clean key. struct is in the
# standard library and, for this fixed shape, as fast as msgpack through msgspec (no new dependency).
_HEAD = struct.Struct("<BiqiqII")
_RANGE = struct.Struct("<qqqqq")
_NO_SESSION = -(2**31)
_VERSION = 1


def encode_state(state: KeyState) -> bytes:
    """Serialise one state compactly (33 bytes + 40 per open range)."""
    prev = _NO_SESSION if state.prev_session is None else state.prev_session
    head = _HEAD.pack(
        _VERSION, state.session, state.hwm, prev, state.prev_hwm, len(state.ranges), len(state.prev_ranges)
    )
    if not state.ranges and not state.prev_ranges:
        return head
    parts = [head]
    parts.extend(_RANGE.pack(*r) for r in state.ranges)
    parts.extend(_RANGE.pack(*r) for r in state.prev_ranges)
    return b"".join(parts)


def decode_state(data: bytes) -> KeyState:
    """Inverse of :func:`encode_state`.

    Raises:
        ValueError: the bytes are not a state of a known version.
    """
    version, session, hwm, prev, prev_hwm, n, m = _HEAD.unpack_from(data)
    if version != _VERSION:
        raise ValueError(f"unknown sequence-state version {version}")
    if not n and not m:
        return KeyState(session, hwm, (), None if prev == _NO_SESSION else prev, prev_hwm, ())
    if len(data) != _HEAD.size + _RANGE.size * (n + m):
        raise ValueError(f"sequence state of {len(data)} bytes does not hold {n}+{m} ranges")
    off = _HEAD.size
    ranges = tuple(_RANGE.unpack_from(data, off + _RANGE.size * i) for i in range(n))
    off += _RANGE.size * n
    prev_ranges = tuple(_RANGE.unpack_from(data, off + _RANGE.size * i) for i in range(m))
    return KeyState(session, hwm, ranges, None if prev == _NO_SESSION else prev, prev_hwm, prev_ranges)
