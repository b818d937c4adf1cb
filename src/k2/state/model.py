"""The state of one sequence key, the verdict vocabulary, and the gap-event schema.

A key is ``(kind, exchange, symbol)``; the session lives in the value, because only one session of a
symbol is live at a time and keying by symbol keeps the store's size bounded by the symbol count.
Closed sessions are kept beside the current one (the previous one in its own fields, older ones in
``older``; each with its high-water mark and its open gaps), up to ``state.sessions_kept`` of them,
so that late ticks of yesterday can still fill yesterday's gaps after today's first tick, and so
that a re-sent older session is recognised tick by tick as duplicates however far the feed has
moved on: the dedup window (exchange time) alone would have forgotten it.

Missing ranges are ``(lo, hi, gap_first, gap_last, detected_us)`` tuples, ascending and disjoint,
all below the high-water mark. ``gap_first == 0`` marks a *hole* (still young, not yet a gap), and
its last field is then the partition clock when it opened (its age is measured from there);
otherwise the range is what remains unfilled of the recorded gap ``[gap_first, gap_last]``
detected at ``detected_us`` (exchange time, µs since the epoch). Sequences start at 1, so 0 is free
to mean "not recorded".

A :class:`PartitionClock` per (kind, partition) holds the partition's exchange clock (the newest
exchange time seen on it in arrival order) and the keys on it that hold young holes, with each
key's oldest hole: what lets a batch record the aged holes of keys that did not trade in it.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import compress
from typing import NamedTuple

import numpy as np
import polars as pl

__all__ = [
    "GAP_EVENTS",
    "GAP_EVENT_SCHEMA",
    "NO_TIME",
    "VERDICT",
    "VERDICTS",
    "CheckResult",
    "ClockKey",
    "ClosedSession",
    "KeyState",
    "PartitionClock",
    "Range",
    "StateKey",
    "decode_clock",
    "decode_state",
    "decode_states",
    "encode_clock",
    "encode_state",
    "encode_states",
    "plain_state",
]

#: (kind, exchange, symbol)
StateKey = tuple[str, str, str]
#: (lo, hi, gap_first, gap_last, detected_us); gap_first == 0: a young hole
Range = tuple[int, int, int, int, int]
#: (session, hwm, ranges) of a closed session older than the previous one
ClosedSession = tuple[int, int, tuple[Range, ...]]
#: (kind, partition): whose exchange clock and young-hole index a PartitionClock is
ClockKey = tuple[str, int]
#: The clock of a partition that has seen no tick yet.
NO_TIME = -(2**63)

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


@dataclass(frozen=True)
class CheckResult:
    """The verdict on one batch that the pipeline acts on: which rows to write, which gap events."""

    keep: pl.Series  # Boolean: rows to write (duplicates are False)
    gap_events: pl.DataFrame | None = None  # rows for the sequence_gaps table (with kafka lineage)


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
    older: tuple[ClosedSession, ...] = ()
    """Closed sessions older than the previous one, newest first."""

    def open_gaps(self) -> int:
        """Recorded gaps not yet recovered, in every session kept (a split gap counts once)."""
        if not self.ranges and not self.prev_ranges and not self.older:
            return 0
        cur = {r[2] for r in self.ranges if r[2]}
        prev = {r[2] for r in self.prev_ranges}
        return len(cur) + len(prev) + sum(len({r[2] for r in rs}) for _, _, rs in self.older)


_new_tuple = tuple.__new__


def plain_state(session: int, hwm: int, prev_session: int | None = None, prev_hwm: int = 0) -> KeyState:
    """``KeyState(session, hwm, (), prev_session, prev_hwm)`` without the NamedTuple's Python-level
    ``__new__``: the hot paths build one per key per batch, and this is ~3x cheaper."""
    return _new_tuple(KeyState, (session, hwm, (), prev_session, prev_hwm, (), ()))


class PartitionClock(NamedTuple):
    """A partition's exchange clock and its keys with young holes; immutable.

    ``holes`` is sorted: ``(exchange, symbol, opened_us)`` per key with a young hole, ``opened_us``
    its oldest hole's opening clock. It is small (keys whose holes are younger than the timeout),
    and the keys that trade in a batch are checked from their own state anyway.
    """

    now: int = NO_TIME
    """Newest exchange time seen on the partition, µs (``NO_TIME``: none yet)."""
    holes: tuple[tuple[str, str, int], ...] = ()


def encode_clock(clock: PartitionClock) -> bytes:
    """Serialise a partition clock (JSON: small, rare keys, written once per checkpoint)."""
    return json.dumps({"v": 1, "now": clock.now, "holes": clock.holes}, separators=(",", ":")).encode()


def decode_clock(data: bytes) -> PartitionClock:
    """Inverse of :func:`encode_clock`.

    Raises:
        ValueError: the bytes are not a partition clock.
    """
    try:
        obj = json.loads(data)
        return PartitionClock(int(obj["now"]), tuple((str(e), str(s), int(t)) for e, s, t in obj["holes"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"not a partition clock: {data[:40]!r}") from exc


# Binary layout, little-endian: version, session, hwm, prev_session (INT32_MIN: none), prev_hwm,
# range count, prev range count; then 5 x int64 per range. 33 bytes for a clean key. Version 2 adds,
# after that, the count of older sessions and per older session (session, hwm, range count) and its
# ranges: 16 bytes for a clean one. A state without older sessions is still written as version 1.
# struct is in the standard library and, for this fixed shape, as fast as msgpack through msgspec.
_HEAD = struct.Struct("<BiqiqII")
_RANGE = struct.Struct("<qqqqq")
_COUNT = struct.Struct("<I")
_OLDER = struct.Struct("<iqI")
_NO_SESSION = -(2**31)
#: _HEAD as a NumPy record (packed, little-endian), to read many heads at once
_HEAD_DTYPE = np.dtype(
    [("version", "u1"), ("session", "<i4"), ("hwm", "<i8"), ("prev", "<i4"), ("prev_hwm", "<i8"),
     ("n", "<u4"), ("m", "<u4")]
)  # fmt: skip
_VERSIONS = (1, 2)


def encode_state(state: KeyState) -> bytes:
    """Serialise one state compactly (33 bytes + 40 per open range, + 16 per older session)."""
    prev = _NO_SESSION if state.prev_session is None else state.prev_session
    version = 2 if state.older else 1
    head = _HEAD.pack(
        version, state.session, state.hwm, prev, state.prev_hwm, len(state.ranges), len(state.prev_ranges)
    )
    if not state.ranges and not state.prev_ranges and not state.older:
        return head
    parts = [head]
    parts.extend(_RANGE.pack(*r) for r in state.ranges)
    parts.extend(_RANGE.pack(*r) for r in state.prev_ranges)
    if state.older:
        parts.append(_COUNT.pack(len(state.older)))
        for session, hwm, ranges in state.older:
            parts.append(_OLDER.pack(session, hwm, len(ranges)))
            parts.extend(_RANGE.pack(*r) for r in ranges)
    return b"".join(parts)


def encode_states(states: Iterable[KeyState]) -> list[bytes]:
    """:func:`encode_state` of many states, the same bytes; a state without ranges or older sessions
    (nearly every key at width) is packed inline, without a function call per key."""
    pack, none, full = _HEAD.pack, _NO_SESSION, encode_state
    return [
        pack(1, st[0], st[1], none if st[3] is None else st[3], st[4], 0, 0)
        if not st[2] and not st[5] and not st[6]
        else full(st)
        for st in states
    ]


def decode_states(values: Sequence[bytes]) -> list[KeyState]:
    """:func:`decode_state` of many values, the same states. The plain ones (33 bytes, version 1,
    no ranges: nearly every key at width) are read as one NumPy record array over their
    concatenation and built in one comprehension; the rest one by one. A restart reads every key
    this way (1 M keys), a batch the keys it changed.

    Raises:
        ValueError: a value is not a state of a known version.
    """
    n = len(values)
    if not n:
        return []
    sizes = np.fromiter(map(len, values), np.int64, n)
    at = np.flatnonzero(sizes == _HEAD.size)
    heads = np.frombuffer(b"".join(compress(values, (sizes == _HEAD.size).tolist())), dtype=_HEAD_DTYPE)
    plain = (heads["version"] == 1) & (heads["n"] == 0) & (heads["m"] == 0)
    out: list[KeyState | None] = [None] * n
    new, none = _new_tuple, _NO_SESSION
    rows = heads[plain]
    prev = rows["prev"].tolist()
    built = [
        new(KeyState, (s, h, (), None if p == none else p, ph, (), ()))
        for s, h, p, ph in zip(rows["session"].tolist(), rows["hwm"].tolist(), prev, rows["prev_hwm"].tolist(),
                               strict=True)
    ]  # fmt: skip
    if len(built) == n:
        return built
    for i, state in zip(at[plain].tolist(), built, strict=True):
        out[i] = state
    for i, maybe in enumerate(out):  # ranges, older sessions, or bytes decode_state must explain
        if maybe is None:
            out[i] = decode_state(values[i])
    return out  # type: ignore[return-value]  # every slot filled above


def decode_state(data: bytes) -> KeyState:
    """Inverse of :func:`encode_state`.

    Raises:
        ValueError: the bytes are not a state of a known version.
    """
    version, session, hwm, prev, prev_hwm, n, m = _HEAD.unpack_from(data)
    if version not in _VERSIONS:
        raise ValueError(f"unknown sequence-state version {version}")
    prev_session = None if prev == _NO_SESSION else prev
    if not n and not m and version == 1:
        return KeyState(session, hwm, (), prev_session, prev_hwm, ())
    end = _HEAD.size + _RANGE.size * (n + m)
    if len(data) < end or (version == 1 and len(data) != end):
        raise ValueError(f"sequence state of {len(data)} bytes does not hold {n}+{m} ranges")
    ranges = _ranges(data, _HEAD.size, n)
    prev_ranges = _ranges(data, _HEAD.size + _RANGE.size * n, m)
    older: list[ClosedSession] = []
    if version == 2:
        try:
            (count,) = _COUNT.unpack_from(data, end)
            off = end + _COUNT.size
            for _ in range(count):
                s, h, k = _OLDER.unpack_from(data, off)
                off += _OLDER.size
                older.append((s, h, _ranges(data, off, k)))
                off += _RANGE.size * k
        except struct.error as exc:
            raise ValueError(f"sequence state of {len(data)} bytes is truncated") from exc
        if off != len(data):
            raise ValueError(f"sequence state of {len(data)} bytes has {len(data) - off} bytes left over")
    return KeyState(session, hwm, ranges, prev_session, prev_hwm, prev_ranges, tuple(older))


def _ranges(data: bytes, offset: int, count: int) -> tuple[Range, ...]:
    if offset + _RANGE.size * count > len(data):
        raise ValueError(f"sequence state of {len(data)} bytes is truncated")
    return tuple(_RANGE.unpack_from(data, offset + _RANGE.size * i) for i in range(count))
