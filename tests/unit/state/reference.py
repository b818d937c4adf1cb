"""A deliberately plain reference for sequence classification: sets of sequence numbers, per tick.

It shares no code with k2.state: holes are "maximal runs of missing, unrecorded sequences" found by
sorting after every tick, which is slow and obvious. The property tests compare the tracker with it.

With a timeout, every tick first raises its partition's clock (the newest exchange time seen on the
partition) and then records, for every key of that partition, the holes opened at a clock at least
``timeout`` older (sorted by key, session and first sequence), before the tick itself is applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["RefEvent", "ReferenceTracker"]

#: (row, event, exchange, symbol, session, first, last, detected_us, recovered_us, recovered_by)
RefEvent = tuple[int, str, str, str, int, int, int, int, int | None, str | None]


@dataclass
class _Session:
    session: int
    hwm: int = 0
    missing: dict[int, int | None] = field(default_factory=dict)  # seq -> gap id (None: a hole)
    opened: dict[int, int] = field(default_factory=dict)  # seq of a hole -> partition clock at opening
    gaps: dict[int, list[int]] = field(default_factory=dict)  # gap id -> [first, last, detected, left]


class ReferenceTracker:
    """Keeps the current session and up to ``kept`` closed ones (the newest) per key."""

    def __init__(self, window: int, kept: int = 10, timeout: int | None = None) -> None:
        self.window = window
        self.kept = kept
        self.timeout = timeout
        self.keys: dict[tuple[str, str], tuple[_Session, list[_Session]]] = {}
        self.partition: dict[tuple[str, str], int] = {}
        self.clock: dict[int, int] = {}
        self.now = 0
        self.events: list[RefEvent] = []

    def step(
        self, row: int, ex: str, sym: str, session: int, seq: int, ts: int, mid: str, partition: int = -1
    ) -> str:
        if self.timeout is not None:
            self.now = self.clock[partition] = max(self.clock.get(partition, ts), ts)
            self.partition[(ex, sym)] = partition
            for key in sorted(k for k, p in self.partition.items() if p == partition and k in self.keys):
                self._age(self.keys[key][0], self._emitter(row, *key))
        cur, closed = self.keys.get((ex, sym), (None, []))
        emit = self._emitter(row, ex, sym)
        if cur is None:
            cur = _Session(session)
        if session == cur.session:
            verdict = self._current(cur, seq, ts, mid, emit)
        elif session > cur.session:
            self._record(cur, ts, emit, everything=True)
            closed = sorted([*closed, cur], key=lambda s: -s.session)[: self.kept]
            cur = _Session(session)
            self._current(cur, seq, ts, mid, emit)
            verdict = "session_reset"
        else:
            known = {s.session: s for s in closed}
            if session not in known:
                candidate = sorted([*closed, _Session(session)], key=lambda s: -s.session)[: self.kept]
                closed = candidate
                known = {s.session: s for s in closed}
            verdict = (
                self._previous(known[session], seq, ts, mid, emit) if session in known else "late_session"
            )
        self.keys[(ex, sym)] = (cur, closed)
        return verdict

    def _emitter(self, row: int, ex: str, sym: str):  # type: ignore[no-untyped-def]
        def emit(event: str, s: _Session, gid: int, rec: int | None = None, by: str | None = None) -> None:
            first, last, det, _ = s.gaps[gid]
            self.events.append((row, event, ex, sym, s.session, first, last, det, rec, by))

        return emit

    def _current(self, s: _Session, seq: int, ts: int, mid: str, emit) -> str:  # type: ignore[no-untyped-def]
        if seq > s.hwm:
            verdict = "in_order" if seq == s.hwm + 1 else "gap"
            for q in range(s.hwm + 1, seq):
                s.missing[q] = None
                s.opened[q] = self.now
            s.hwm = seq
        elif seq in s.missing:
            gid = s.missing.pop(seq)
            verdict = "out_of_order" if gid is None else "late_fill"
            if gid is not None:
                self._filled(s, gid, ts, mid, emit)
        else:
            verdict = "duplicate"
        self._record(s, ts, emit, everything=False)
        return verdict

    def _previous(self, s: _Session, seq: int, ts: int, mid: str, emit) -> str:  # type: ignore[no-untyped-def]
        if seq in s.missing:
            self._filled(s, s.missing.pop(seq), ts, mid, emit)  # type: ignore[arg-type]
            return "late_fill"
        if seq <= s.hwm:
            return "duplicate"
        for q in range(s.hwm + 1, seq):
            s.missing[q] = None
        s.hwm = seq
        self._record(s, ts, emit, everything=True)
        return "late_session"

    def _filled(self, s: _Session, gid: int, ts: int, mid: str, emit) -> None:  # type: ignore[no-untyped-def]
        s.gaps[gid][3] -= 1
        if s.gaps[gid][3] == 0:
            emit("recovered", s, gid, ts, mid)

    def _age(self, s: _Session, emit) -> None:  # type: ignore[no-untyped-def]
        assert self.timeout is not None
        for lo, hi in self._runs(s):
            if s.opened[lo] + self.timeout <= self.now:
                self._gap(s, lo, hi, self.now, emit)

    def _record(self, s: _Session, ts: int, emit, *, everything: bool) -> None:  # type: ignore[no-untyped-def]
        for lo, hi in self._runs(s):
            if everything or s.hwm - hi > self.window:
                self._gap(s, lo, hi, ts, emit)

    def _gap(self, s: _Session, lo: int, hi: int, ts: int, emit) -> None:  # type: ignore[no-untyped-def]
        s.gaps[lo] = [lo, hi, ts, hi - lo + 1]
        for q in range(lo, hi + 1):
            s.missing[q] = lo
        emit("opened", s, lo)

    def _runs(self, s: _Session) -> list[list[int]]:
        holes = sorted(q for q, g in s.missing.items() if g is None)
        runs: list[list[int]] = []
        for q in holes:
            if runs and runs[-1][1] == q - 1:
                runs[-1][1] = q
            else:
                runs.append([q, q])
        return runs
