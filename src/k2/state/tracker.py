"""Vectorised sequence classification of one micro-batch: verdicts, gap events, new states.

``SequenceTracker.classify`` is pure: the same batch and the same input states always give the same
result, and it writes nothing. That is what makes the pipeline's rebuild (replaying Kafka from the
store's token after a crash) reproduce exactly the states the lost commit would have written.

Most keys in a batch are *simple*: their ticks continue the stored high-water mark one by one, in
one session, with no young hole pending. One numpy grouping finds per key first, last, breaks and
sessions; whole-array tests against the stored marks pick the simple keys (no Python branch per
key, which at 1 M symbols, ~14,000 keys a batch, was a real share of classify), and their new
state is the old one with a higher mark; only the remaining keys are folded tick by tick by
:class:`~k2.state.fold.KeyFold`. ``_fast_path = False`` folds every key: the tests compare the two.

With a ``reorder_timeout`` a hole is also recorded once it is that old on its partition's exchange
clock (the newest exchange_ts seen on the partition in arrival order), so a quiet symbol's gap
surfaces when the *feed* moves on, not when the symbol trades again. The clock and the keys with
young holes live in a :class:`~k2.state.model.PartitionClock` per partition, carried from batch to
batch like the states (``clocks.py`` derives a batch's clocks); keys whose oldest hole ages within
a batch are loaded and swept even if they did not trade. The clock is a function of the partition's
arrival order alone, so the verdicts stay independent of batch boundaries and restarts. Batches
without a due hole pay one max per partition.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import compress, repeat
from operator import is_not, itemgetter

import numpy as np
import polars as pl

from k2.observability.logging import get_logger
from k2.state.clocks import BatchClocks, at_deadline, partitions_of
from k2.state.errors import InvalidBatchError
from k2.state.events import detection_seconds, events_frame
from k2.state.fold import DUPLICATE, GapEventRow, KeyFold
from k2.state.groups import BatchGroups
from k2.state.metrics import state_metrics
from k2.state.model import GAP_EVENT_SCHEMA, VERDICT, VERDICTS, ClockKey, KeyState, PartitionClock, StateKey

__all__ = ["REQUIRED_COLUMNS", "ClassifyResult", "SequenceTracker", "verdict_series"]

REQUIRED_COLUMNS = ("message_id", "exchange", "symbol", "session", "sequence", "exchange_ts")
log = get_logger(__name__)


def verdict_series(codes: np.ndarray) -> pl.Series:
    """Verdict codes (uint8) as a ``VERDICT`` Enum series, without building strings."""
    series = pl.Series("verdict", codes, dtype=pl.UInt8)
    to = getattr(series.cat, "to", None)  # polars >= 2: integer -> Enum goes through .cat.to
    return to(VERDICT) if to is not None else series.cast(VERDICT)


@dataclass(frozen=True, slots=True)
class ClassifyResult:
    """What one batch did to the sequence state."""

    verdicts: pl.Series
    """``VERDICT`` Enum, aligned with the batch's rows."""
    gaps: pl.DataFrame
    """Gap events (``GAP_EVENT_SCHEMA``), in arrival order of the ticks that caused them."""
    states: dict[StateKey, KeyState] = field(repr=False)
    """New state of every key in the batch (and of keys swept by the clock): ``SequenceStore.commit``."""
    clocks: dict[ClockKey, PartitionClock] = field(default_factory=dict, repr=False)
    """New clock of every partition in the batch (empty without a reorder timeout)."""
    detection_s: tuple[float, ...] = ()
    """Per recorded gap whose hole's opening is known: seconds of exchange clock from hole to gap."""

    def keep(self) -> pl.Series:
        """Rows to write: everything except duplicates (a late or out-of-order tick is real data)."""
        return self.verdicts != VERDICTS[DUPLICATE]


class SequenceTracker:
    """Classifies the ticks of one stream kind against stored per-key state.

    Args:
        kind: "trades" or "quotes"; part of every state key.
        reorder_window: how far (in sequence numbers) behind the high-water mark a hole may lag and
            still be filled "out of order"; beyond it the hole becomes a recorded gap.
        sessions_kept: closed sessions remembered per key (``state.sessions_kept``).
        reorder_timeout: seconds of partition exchange clock after which a hole is recorded even if
            its own stream has not moved on (``state.reorder_timeout``); None: the tick bound only.
    """

    def __init__(
        self,
        kind: str,
        *,
        reorder_window: int = 64,
        sessions_kept: int = 10,
        reorder_timeout: float | None = None,
    ) -> None:
        if reorder_window < 0:
            raise ValueError("reorder_window must be >= 0")
        if sessions_kept < 1:
            raise ValueError("sessions_kept must be >= 1")
        if reorder_timeout is not None and reorder_timeout <= 0:
            raise ValueError("reorder_timeout must be > 0")
        self.kind = kind
        self.reorder_window = reorder_window
        self.sessions_kept = sessions_kept
        self.timeout_us = None if reorder_timeout is None else round(reorder_timeout * 1e6)
        # keys() groups the batch; classify() of the same batch object reuses that work once
        self._grouped: tuple[pl.DataFrame, BatchGroups, list[StateKey], BatchClocks | None] | None = None
        self._fast_path = True  # False in tests only: fold every key (the reference)
        self._open_gaps: dict[StateKey, int] = {}  # for the k2_gaps_open gauge
        self._open_total = 0
        # per partition: keys with young holes, age of the oldest (µs), for the gauges
        self._holes: dict[int, tuple[int, int]] = {}

    def keys(
        self, batch: pl.DataFrame, clocks: Mapping[ClockKey, PartitionClock] | None = None
    ) -> list[StateKey]:
        """The state keys of a batch, for ``SequenceStore.load``: its own, then those of other keys
        on its partitions whose oldest hole ages within it (from ``clocks``, with a timeout).

        Raises:
            InvalidBatchError: see :meth:`classify`.
        """
        _validate(batch)
        if batch.is_empty():
            return []
        groups = BatchGroups(batch)
        times = self._clocks(batch, clocks)
        own = self._group_keys(groups)
        self._grouped = (batch, groups, own, times)
        keys = list(own)
        if times is not None and times.due:
            seen = set(own)
            keys.extend(k for k in times.due if k not in seen)
        return keys

    def clock_keys(self, batch: pl.DataFrame) -> list[ClockKey]:
        """The partition clocks a batch needs (none without a timeout)."""
        if self.timeout_us is None or batch.is_empty():
            return []
        return [(self.kind, p) for p in partitions_of(batch).unique().to_list()]

    def classify(
        self,
        batch: pl.DataFrame,
        states: Mapping[StateKey, KeyState],
        clocks: Mapping[ClockKey, PartitionClock] | None = None,
    ) -> ClassifyResult:
        """Classify every tick; return verdicts, gap events and the keys' and partitions' new states.

        Args:
            batch: ticks with at least ``REQUIRED_COLUMNS``; per key in arrival (Kafka) order, which
                holds for a batch in Kafka order per partition since a key lives in one partition.
                ``_partition`` (if present) scopes the exchange clock; without it, one clock.
            states: stored states of (at least) ``keys(batch, clocks)``; missing keys are new.
            clocks: stored clocks of ``clock_keys(batch)``; missing ones have seen nothing yet.

        Raises:
            InvalidBatchError: a required column is missing, or a sequence is null or < 1.
        """
        cached, self._grouped = self._grouped, None
        if cached is not None and cached[0] is batch:
            groups, keys, times = cached[1], cached[2], cached[3]
        else:
            _validate(batch)
            if batch.is_empty():
                return ClassifyResult(
                    verdict_series(np.zeros(0, np.uint8)), pl.DataFrame(schema=GAP_EVENT_SCHEMA), {}
                )
            groups = BatchGroups(batch)
            keys = self._group_keys(groups)
            times = self._clocks(batch, clocks)
        codes = np.zeros(batch.height, dtype=np.uint8)
        gpart = times.group_partitions(groups) if times is not None else None
        if self._fast_path:
            new_states, irregular = self._simple(groups, keys, states, times, gpart)
        else:  # every key folded tick by tick: the reference the fast path is tested against
            new_states, irregular = {}, list(range(len(keys)))
        events: list[GapEventRow] = []
        folded: dict[StateKey, int] = {}
        if irregular:
            self._fold(batch, groups, irregular, states, codes, events, new_states, times, gpart, folded)
        if times is not None:
            self._sweep_quiet(times, states, events, new_states, folded)
        result_clocks = {} if times is None else times.advance(new_states, folded)
        return ClassifyResult(
            verdict_series(codes),
            events_frame(self.kind, events, batch),
            new_states,
            result_clocks,
            detection_seconds(events),
        )

    def expire(
        self, clocks: Mapping[ClockKey, PartitionClock], states: Mapping[StateKey, KeyState]
    ) -> ClassifyResult:
        """Record every young hole of these partitions now: the wall-clock fallback.

        For a partition whose exchange clock stopped (no tick at all for ``reorder_timeout`` of
        wall time, e.g. the feed ended), nothing on the exchange clock will ever age its holes. Each
        is recorded with detected_at = its opening + timeout (exchange time, so the value does not
        depend on when this ran); lineage is the partition, with no offset. Unlike every other
        verdict this is not a function of the stream: a replay that stops at a different point, or a
        feed that resumes, may see the same hole aged by the exchange clock instead.

        Args:
            clocks: the partitions' stored clocks (their young-hole index says which keys to load).
            states: the states of every key in those indexes.
        """
        assert self.timeout_us is not None, "expire needs a reorder_timeout"
        timeout = self.timeout_us
        events: list[GapEventRow] = []
        new_states: dict[StateKey, KeyState] = {}
        new_clocks: dict[ClockKey, PartitionClock] = {}
        parts: list[int] = []
        for ck, clock in clocks.items():
            if not clock.holes:
                continue
            row = len(parts)
            parts.append(ck[1])
            for ex, sym, _ in clock.holes:
                st = states.get((self.kind, ex, sym))
                if st is None:
                    continue
                fold = KeyFold(ex, sym, st, self.reorder_window, events, self.sessions_kept, timeout,
                               at_deadline(row))  # fmt: skip
                fold.sweep(2**62)
                new_states[(self.kind, ex, sym)] = fold.state()
            new_clocks[ck] = clock._replace(holes=())
        lineage = pl.DataFrame(
            {
                "_partition": pl.Series(parts, dtype=pl.Int32),
                "_offset": pl.Series([None] * len(parts), dtype=pl.Int64),
            }
        )
        empty = verdict_series(np.zeros(0, np.uint8))
        return ClassifyResult(
            empty, events_frame(self.kind, events, lineage), new_states, new_clocks, detection_seconds(events)
        )

    def _group_keys(self, groups: BatchGroups) -> list[StateKey]:
        kind = self.kind
        return [(kind, e, s) for e, s in zip(groups.exchanges, groups.symbols, strict=True)]

    def _simple(
        self,
        groups: BatchGroups,
        keys: list[StateKey],
        states: Mapping[StateKey, KeyState],
        times: BatchClocks | None,
        gpart: list[int] | None,
    ) -> tuple[dict[StateKey, KeyState], list[int]]:
        """New states of the *simple* keys, found with whole-array tests; the groups left to fold.

        A key is simple when its ticks are one session, each one above the previous, starting at
        its stored mark + 1 (a key never stored counts as mark 0 of the batch's session, so it must
        start at 1), no young hole of it gets recorded by this batch and its partition clock does
        not sweep it (a key the clock names is folded even if never stored, so that its entry leaves
        the clock's young-hole index as the fold removes it). Its new state is the stored one (or a new clean one) with the batch's last
        sequence as mark: exactly what folding its ticks one by one gives, with no verdict other
        than in_order and no event. Everything per key here is a C-level loop (``map``,
        ``np.fromiter``, comprehensions over the selected keys), not a Python branch per key.
        """
        n = len(keys)
        got = list(map(states.get, keys, repeat(_ABSENT)))  # a key never stored: mark 0, no session
        known = np.fromiter(map(is_not, got, repeat(_ABSENT)), bool, n)
        hwm = np.fromiter(map(_HWM, got), np.int64, n)
        session = np.fromiter(map(_SESSION, got), np.int64, n)
        fast = groups.simple & (groups.vfirst == hwm + 1) & (~known | (session == groups.vsession))
        due = {} if times is None else times.due
        if due:  # a key its partition clock sweeps is folded, stored or not: the fold drops its entry
            fast &= ~np.fromiter(map(due.__contains__, keys), bool, n)
        # keys with ranges: fast only if none of their young holes is recorded by this batch
        ranged = np.flatnonzero(fast & np.fromiter(map(bool, map(_RANGES, got)), bool, n))
        if ranged.size:
            window, last = self.reorder_window, groups.last
            for g in ranged.tolist():
                aged = None if times is None else times.aged(gpart[g])  # type: ignore[index]
                if not _quiet(got[g], last[g] - window, aged):
                    fast[g] = False
        # the new states, built by C-level maps (not KeyState(...): NamedTuple's __new__ is a Python
        # function): a fresh key's is clean with the batch's session; a stored one's keeps all but its mark
        fresh_rows, carried_rows = fast & ~known, fast & known
        fresh_mask, carried_mask = fresh_rows.tolist(), carried_rows.tolist()
        fresh = np.flatnonzero(fresh_rows)
        clean = zip(groups.vsession[fresh].tolist(), groups.vlast[fresh].tolist(),
                    repeat(()), repeat(None), repeat(0), repeat(()), repeat(()), strict=False)  # fmt: skip
        new_states: dict[StateKey, KeyState] = dict(
            zip(compress(keys, fresh_mask), map(_NEW, repeat(KeyState), clean), strict=True)
        )
        stored = list(compress(got, carried_mask))
        hwms = groups.vlast[carried_rows].tolist()
        marked = zip(
            map(_SESSION, stored), hwms, *(map(itemgetter(i), stored) for i in range(2, 7)), strict=True
        )
        new_states.update(zip(compress(keys, carried_mask), map(_NEW, repeat(KeyState), marked), strict=True))
        return new_states, np.flatnonzero(~fast).tolist()

    def _clocks(
        self, batch: pl.DataFrame, clocks: Mapping[ClockKey, PartitionClock] | None
    ) -> BatchClocks | None:
        if self.timeout_us is None:
            return None
        return BatchClocks(self.kind, self.timeout_us, batch, clocks or {})

    def _sweep_quiet(
        self,
        times: BatchClocks,
        states: Mapping[StateKey, KeyState],
        events: list[GapEventRow],
        new_states: dict[StateKey, KeyState],
        folded: dict[StateKey, int],
    ) -> None:
        """Record the aged holes of keys that did not trade in this batch (their partition's did)."""
        for key, p in times.due.items():
            if key in new_states:
                continue
            st = states.get(key)
            if st is None:
                continue  # its state was never committed (dropped work): nothing to sweep
            fold = KeyFold(key[1], key[2], st, self.reorder_window, events, self.sessions_kept,
                           self.timeout_us, times.crossing(p))  # fmt: skip
            fold.sweep(times.end[p])
            new_states[key] = fold.state()
            folded[key] = p

    def _fold(
        self,
        batch: pl.DataFrame,
        groups: BatchGroups,
        irregular: list[int],
        states: Mapping[StateKey, KeyState],
        codes: np.ndarray,
        events: list[GapEventRow],
        new_states: dict[StateKey, KeyState],
        clocks: BatchClocks | None,
        gpart: list[int] | None,
        folded: dict[StateKey, int],
    ) -> None:
        """Fold the ticks of irregular keys one by one, each key in its own arrival order."""
        spans = [(groups.starts[g], groups.ends[g]) for g in irregular]
        rows = np.concatenate([groups.order[a:b] for a, b in spans])
        seqs = groups.seq[rows].tolist()
        sessions = groups.session[rows].tolist()
        times = batch.get_column("exchange_ts").dt.epoch("us").to_numpy()[rows].tolist()
        ids = batch.get_column("message_id").gather(rows).to_list()
        nows = clocks.at_row[rows].tolist() if clocks is not None else None
        kind, window, timeout = self.kind, self.reorder_window, self.timeout_us
        pos = 0
        for g, (a, b) in zip(irregular, spans, strict=True):
            ex, sym = groups.exchanges[g], groups.symbols[g]
            key = (kind, ex, sym)
            crossing = None
            if clocks is not None:
                assert gpart is not None
                crossing = clocks.crossing(gpart[g])
            fold = KeyFold(ex, sym, states.get(key), window, events, self.sessions_kept, timeout, crossing)
            for j in range(pos, pos + b - a):
                i = int(rows[j])
                fold.row = i
                if nows is not None:
                    fold.now = nows[j]
                code = fold.step(sessions[j], seqs[j], times[j], ids[j])
                if code:
                    codes[i] = code
            pos += b - a
            if clocks is not None and fold.holes:
                fold.sweep(clocks.end[gpart[g]])  # type: ignore[index]  # aged after its last tick
            new_states[key] = fold.state()
            if gpart is not None:
                folded[key] = gpart[g]

    def observe(self, result: ClassifyResult) -> None:
        """Count verdicts and gaps on the metrics and log each recorded gap and recovery.

        Call once per batch after its Iceberg commit, and not while rebuilding (those ticks were
        counted before the crash). Kept apart from :meth:`classify` so that classify stays pure.
        """
        m = state_metrics()
        kind = self.kind
        for verdict, count in result.verdicts.value_counts().iter_rows():
            m.verdicts.labels(kind, verdict).inc(count)
        open_by_key = self._open_gaps
        states = result.states
        # only keys with ranges (or with gaps open before) can change the count: C-level filters
        # instead of a method call per key (~14,000 a batch at 1 M symbols)
        ranged = map(any, zip(map(_RANGES, states.values()), map(_PREV_RANGES, states.values()),
                              map(_OLDER, states.values()), strict=True))  # fmt: skip
        touched = set(compress(states, ranged)).union(open_by_key.keys() & states.keys())
        for key in touched:
            st = states[key]
            now = st.open_gaps()
            before = open_by_key.get(key, 0)
            if now != before:
                self._open_total += now - before
                if now:
                    open_by_key[key] = now
                else:
                    del open_by_key[key]
        m.gaps_open.labels(kind).set(self._open_total)
        if result.clocks:
            for ck, clock in result.clocks.items():
                oldest = min((t for _, _, t in clock.holes), default=clock.now)
                self._holes[ck[1]] = (len(clock.holes), clock.now - oldest)
            m.holes_open.labels(kind).set(sum(n for n, _ in self._holes.values()))
            m.oldest_pending.labels(kind).set(max(age for _, age in self._holes.values()) / 1e6)
        for seconds in result.detection_s:
            m.gap_detection.labels(kind).observe(seconds)
        if result.gaps.is_empty():
            return
        for row in result.gaps.iter_rows(named=True):
            fields = {
                "kind": kind, "exchange": row["exchange"], "symbol": row["symbol"],
                "session": row["session"].isoformat(), "first_missing": row["first_missing"],
                "last_missing": row["last_missing"], "size": row["size"],
            }  # fmt: skip
            if row["event"] == "opened":
                m.gaps_recorded.labels(kind).inc()
                m.gap_ticks.labels(kind).inc(row["size"])
                log.warning("sequence gap recorded", detected_at=row["detected_at"].isoformat(), **fields)
            else:
                m.gap_recoveries.labels(kind).inc()
                log.info(
                    "sequence gap recovered",
                    recovered_at=row["recovered_at"].isoformat(),
                    recovered_by=row["recovered_by"],
                    **fields,
                )


_ABSENT = KeyState(-(2**40), 0, (), None, 0, (), ())  # what _simple reads for a key never stored
_HWM, _SESSION, _RANGES = itemgetter(1), itemgetter(0), itemgetter(2)
_PREV_RANGES, _OLDER = itemgetter(5), itemgetter(6)
_NEW = tuple.__new__


def _quiet(state: KeyState, limit: int, aged: int | None) -> bool:
    """No young hole of the state falls behind ``limit``, nor opened at or before ``aged`` (so none
    gets recorded by this batch)."""
    if aged is None:
        return all(r[2] or r[1] >= limit for r in state.ranges)
    return all(r[2] or (r[1] >= limit and r[4] > aged) for r in state.ranges)


def _validate(batch: pl.DataFrame) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in batch.columns]
    if missing:
        raise InvalidBatchError(f"batch lacks column(s) {', '.join(missing)}", column=missing[0])
    seq = batch.get_column("sequence")
    if seq.null_count() or (batch.height and seq.min() < 1):  # type: ignore[operator]
        raise InvalidBatchError(
            "sequence must be non-null and >= 1 (validate before tracking)", column="sequence"
        )
    for col in ("exchange", "symbol", "session", "exchange_ts"):
        if batch.get_column(col).null_count():
            raise InvalidBatchError(f"{col} must be non-null", column=col)
