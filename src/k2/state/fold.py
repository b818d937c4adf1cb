"""The exact, tick-by-tick classification of one key: the slow path and the definition.

The vectorised tracker sends here only keys whose batch has anything irregular (a hole, a sequence
at or below the high-water mark, a session change, a key never seen that does not start at 1). For
every other key the fold would answer ``in_order`` for each tick and only raise the high-water
mark, which the tracker does with Polars expressions instead; the property tests check that both
paths agree with a plain reference implementation whatever the batch boundaries.

Rules, applied to each tick in the key's arrival order (W = reorder window):

* first, with a reorder timeout T: the partition clock C (the newest exchange_ts seen on the
  partition, this tick included) may have aged holes: every hole opened at C0 with C0 + T <= C is
  recorded, detected_at = the clock where it first reached C0 + T, and the event belongs to the
  tick that moved it there (possibly another key's: the tracker sweeps keys that did not trade).
* session == current, seq > hwm: ``in_order`` when seq == hwm + 1, else ``gap`` and the hole
  [hwm + 1, seq - 1] opens (at clock C). hwm := seq, then every hole with hwm - hole_last > W is
  *recorded* (an ``opened`` gap event, detected_at = this tick's exchange_ts).
* session == current, seq <= hwm: inside a hole -> ``out_of_order``; inside a recorded gap ->
  ``late_fill``; otherwise ``duplicate``. A fill splits its range; a hole piece left below the fill
  that is now further than W behind hwm is recorded at once. When the last missing sequence of a
  recorded gap arrives, a ``recovered`` event repeats the gap with recovered_at/recovered_by.
* session > current: ``session_reset``. Every hole of the closing session is recorded (the session
  is over, nothing can make it young again); that session becomes the *previous* one and the tick
  starts the new session as above (seq > 1 opens the hole [1, seq - 1]).
* session == a closed session kept (the previous one, or an older one): a fill of one of its gaps ->
  ``late_fill``; seq <= its hwm -> ``duplicate``; beyond it -> ``late_session`` (any skipped range
  is recorded at once: that session is closed).
* any other older session -> ``late_session``, and it is kept as a closed session from now on (its
  skipped range [1, seq - 1] recorded at once), unless ``sessions_kept`` closed sessions newer than
  it are kept already: then nothing about it is kept.

At most ``sessions_kept`` closed sessions are kept per key, the newest; a reset pushes out the
oldest. So a whole session re-sent days later is still judged tick by tick (``duplicate``), which
the dedup window, measured in exchange time from the newest tick, cannot promise.

A sequence restarting at 1 inside one session is a replay, hence ``duplicate``: its message ids (a
hash that includes the sequence) equal the first delivery's. A feed that really renumbers must
start a new session.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from k2.state.model import KeyState, plain_state

__all__ = [
    "DUPLICATE",
    "GAP",
    "IN_ORDER",
    "LATE_FILL",
    "LATE_SESSION",
    "OUT_OF_ORDER",
    "SESSION_RESET",
    "SWEEP",
    "TICK",
    "Crossing",
    "GapEventRow",
    "KeyFold",
]

IN_ORDER, GAP, DUPLICATE, OUT_OF_ORDER, LATE_FILL, SESSION_RESET, LATE_SESSION = range(7)

#: Event phases within one row: aged holes are swept before the tick itself is applied.
SWEEP, TICK = 0, 1
#: (row, event, exchange, symbol, session, first, last, detected_us, recovered_us, recovered_by, phase,
#: opened_us: the hole's opening clock for an "opened" event, 0 when unknown)
GapEventRow = tuple[int, str, str, str, int, int, int, int, int | None, str | None, int, int]


#: deadline -> (row, clock there): where a partition's clock first reaches a deadline in the batch
Crossing = Callable[[int], tuple[int, int]]


class KeyFold:
    """Mutable working copy of one key's state while its irregular ticks are folded in."""

    __slots__ = (
        "closed",
        "crossing",
        "events",
        "exchange",
        "holes",
        "hwm",
        "keep",
        "now",
        "ranges",
        "row",
        "session",
        "symbol",
        "timeout",
        "window",
    )

    def __init__(
        self,
        exchange: str,
        symbol: str,
        state: KeyState | None,
        window: int,
        events: list[GapEventRow],
        sessions_kept: int = 1,
        timeout: int | None = None,
        crossing: Crossing | None = None,
    ) -> None:
        self.exchange = exchange
        self.timeout = timeout
        self.crossing = crossing
        self.now = 0  # the partition clock at the current row (0 without a timeout)
        self.symbol = symbol
        self.window = window
        self.events = events
        self.keep = max(1, sessions_kept)
        self.row = 0
        self.session: int | None = None if state is None else state.session
        self.hwm = 0 if state is None else state.hwm
        self.ranges: list[list[Any]] = [] if state is None else [list(r) for r in state.ranges]
        self.holes = sum(1 for r in self.ranges if r[2] == 0)
        # closed sessions, newest first: [session, hwm, ranges]; the first is the previous session
        self.closed: list[list[Any]] = []
        if state is not None and state.prev_session is not None:
            self.closed.append([state.prev_session, state.prev_hwm, [list(r) for r in state.prev_ranges]])
            self.closed.extend([s, h, [list(r) for r in rs]] for s, h, rs in state.older)

    def state(self) -> KeyState:
        """The folded state, frozen again."""
        assert self.session is not None, "a fold always sees at least one tick"
        ranges = tuple(tuple(r) for r in self.ranges)
        if not self.closed:
            if not ranges:
                return plain_state(self.session, self.hwm)
            return KeyState(self.session, self.hwm, ranges)
        (prev, prev_hwm, prev_ranges), *older = self.closed
        return KeyState(
            self.session,
            self.hwm,
            ranges,
            prev,
            prev_hwm,
            tuple(tuple(r) for r in prev_ranges),
            tuple((s, h, tuple(tuple(r) for r in rs)) for s, h, rs in older),
        )

    def step(self, session: int, seq: int, ts: int, message_id: str) -> int:
        """Fold one tick in (``row`` and ``now`` set first); returns its verdict code."""
        if self.holes and self.timeout is not None:
            self.sweep(self.now)
        if seq == self.hwm + 1 and session == self.session and not self.holes:
            self.hwm = seq  # the common case, kept cheap: irregular keys are mostly regular ticks
            return IN_ORDER
        if self.session is None:
            self.session = session
            return self._advance(seq, ts)
        if session == self.session:
            if seq > self.hwm:
                return self._advance(seq, ts)
            return self._fill(self.ranges, self.session, seq, ts, message_id, young=True)
        if session > self.session:
            self._reset(session, ts)
            self._advance(seq, ts)
            return SESSION_RESET
        return self._late_session(session, seq, ts, message_id)

    def _advance(self, seq: int, ts: int) -> int:
        verdict = IN_ORDER
        if seq > self.hwm + 1:
            self.ranges.append([self.hwm + 1, seq - 1, 0, 0, self.now])
            self.holes += 1
            verdict = GAP
        self.hwm = seq
        if self.holes:
            limit = self.hwm - self.window
            for r in self.ranges:
                if r[2] == 0 and r[1] < limit:
                    self._record(r, self.session, ts)  # type: ignore[arg-type]
        return verdict

    def sweep(self, now: int) -> None:
        """Record the current session's holes that are ``timeout`` old on the partition clock ``now``."""
        assert self.timeout is not None and self.crossing is not None
        limit = now - self.timeout
        for r in self.ranges:
            if r[2] == 0 and r[4] <= limit:
                row, clock = self.crossing(r[4] + self.timeout)
                self._record(r, self.session, clock, row=row, phase=SWEEP)  # type: ignore[arg-type]

    def _record(
        self, r: list[Any], session: int, ts: int, *, row: int | None = None, phase: int = TICK
    ) -> None:
        opened = r[4]
        r[2], r[3], r[4] = r[0], r[1], ts
        self.holes -= 1
        self.events.append(
            (self.row if row is None else row, "opened", self.exchange, self.symbol, session, r[0], r[1], ts,
             None, None, phase, opened)
        )  # fmt: skip

    def _fill(
        self, ranges: list[list[Any]], session: int, seq: int, ts: int, message_id: str, *, young: bool
    ) -> int:
        idx = _locate(ranges, seq)
        if idx < 0:
            return DUPLICATE
        lo, hi, first, last, detected = ranges[idx]
        pieces = []
        if lo < seq:
            pieces.append([lo, seq - 1, first, last, detected])
        if seq < hi:
            pieces.append([seq + 1, hi, first, last, detected])
        ranges[idx : idx + 1] = pieces
        if first == 0:
            self.holes += len(pieces) - 1
            if young and lo < seq and self.hwm - (seq - 1) > self.window:
                self._record(pieces[0], session, ts)
            return OUT_OF_ORDER
        if not any(r[2] == first for r in ranges):
            self.events.append(
                (self.row, "recovered", self.exchange, self.symbol, session, first, last, detected, ts,
                 message_id, TICK, 0)
            )  # fmt: skip
        return LATE_FILL

    def _reset(self, session: int, ts: int) -> None:
        closing = self.session
        for r in self.ranges:
            if r[2] == 0:
                self._record(r, closing, ts)  # type: ignore[arg-type]
        self.closed.insert(0, [closing, self.hwm, self.ranges])
        del self.closed[self.keep :]
        self.session, self.hwm, self.ranges, self.holes = session, 0, [], 0

    def _late_session(self, session: int, seq: int, ts: int, message_id: str) -> int:
        closed = self.closed
        at = len(closed)
        for i, c in enumerate(closed):
            if c[0] == session:
                return self._closed_tick(c, seq, ts, message_id)
            if c[0] < session:
                at = i
                break
        if at >= self.keep:
            return LATE_SESSION  # older than every session kept, and no room: nothing is kept
        entry: list[Any] = [session, 0, []]
        closed.insert(at, entry)
        del closed[self.keep :]
        return self._closed_tick(entry, seq, ts, message_id)

    def _closed_tick(self, c: list[Any], seq: int, ts: int, message_id: str) -> int:
        """A tick of a closed session: a fill, a duplicate, or beyond its mark (recorded at once)."""
        session, hwm, ranges = c
        if seq <= hwm:
            return self._fill(ranges, session, seq, ts, message_id, young=False)
        if seq > hwm + 1:
            r = [hwm + 1, seq - 1, 0, 0, 0]
            ranges.append(r)
            self.holes += 1  # _record takes it back: a closed session never holds young holes
            self._record(r, session, ts)
        c[1] = seq
        return LATE_SESSION


def _locate(ranges: list[list[Any]], seq: int) -> int:
    """Index of the range holding seq, or -1; scans from the newest end, where fills usually land."""
    for i in range(len(ranges) - 1, -1, -1):
        r = ranges[i]
        if r[0] <= seq:
            return i if seq <= r[1] else -1
    return -1
