"""The checks the pipeline runs on each batch: sequence tracking and dedup from this package.

:class:`StateChecks` is the one implementation of the pipeline's hook (it satisfies the
``k2.pipeline.checks.BatchChecks`` protocol by its shape); the pipeline imports it, never the
other way round, so this package stands without the pipeline.

Sequence checks always; dedup by message id for the topics given a dedup opener. State produced by
the batches of one checkpoint stays in memory (so batch 2 sees batch 1's state).

State is scoped per partition, as Kafka Streams and Quix Streams scope their stores: the sequence
state of a key lives in the store and is read through (a key belongs to one partition, the Kafka
key being the symbol), and each owned (topic, partition) has its own :class:`Deduplicator` (Bloom
filter and exact-store namespace), opened when the partition is assigned and dropped when it is
revoked. So no filter in this process ever answers for ids that another process, or a process
that died, committed for a partition: on assignment the filter is loaded from its saved file only
if that file reflects exactly the store's token, and rebuilt from the exact store otherwise.
``prepare(end)`` freezes it and returns the function that writes it, which the pipeline runs after
every table committed, possibly on another thread while later batches are classified: until it has
run, later batches read the frozen layers before the store.

Each stage keeps its own token per partition (next offset its stored state reflects). ``assign``
returns the lowest of them, so after a crash the pipeline re-reads from there; rows below a stage's
token are skipped by that stage (already applied), rows between a stage's token and the tables'
watermarks are applied to the state but written by no sink (they are already in the tables): the
rebuild.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from itertools import compress, repeat
from operator import is_not, not_
from typing import TypeAlias

import numpy as np
import polars as pl

from k2.state.base import PartitionToken, SequenceStore
from k2.state.dedup import Deduplicator
from k2.state.errors import StateStoreError
from k2.state.ids import id_bytes
from k2.state.kept import KeptIds
from k2.state.model import CheckResult, ClockKey, KeyState, PartitionClock, StateKey
from k2.state.tracker import ClassifyResult, SequenceTracker
from k2.types import Offsets, TopicPartition

__all__ = ["BEGINNING", "DedupOpener", "StateChecks"]

#: "Replay from the start": what a stage that never committed a partition asks for (the lake's NO_OFFSET).
BEGINNING = -1

#: Opens the Deduplicator of one partition of a topic, its filter ready (loaded or rebuilt).
DedupOpener: TypeAlias = Callable[[int], Deduplicator]


class StateChecks:
    """Sequence tracking (+ optional dedup) for the consumer pipeline.

    Args:
        store: the sequence store (``open_sequence_store``); must be thread-safe (both are).
        reorder_window, sessions_kept, reorder_timeout: see :class:`SequenceTracker`.
        dedup: topic -> opener of a partition's Deduplicator, for the topics whose feeds need dedup
            by message id. Called on every assignment of a partition.
    """

    def __init__(
        self,
        store: SequenceStore,
        *,
        reorder_window: int = 64,
        sessions_kept: int = 10,
        reorder_timeout: float | None = None,
        dedup: Mapping[str, DedupOpener] | None = None,
    ) -> None:
        self.store = store
        self.reorder_window = reorder_window
        self.reorder_timeout = reorder_timeout
        self.sessions_kept = sessions_kept
        self.dedup = dict(dedup or {})
        self.owned: dict[TopicPartition, Deduplicator] = {}  # the owned partitions' dedup state
        self._trackers: dict[str, SequenceTracker] = {}
        # per stage: offsets below the floor were applied before this assignment; "expected" is the
        # token the store will hold once every prepared commit has run
        self._floor_seq: dict[TopicPartition, int | None] = {}
        self._floor_dedup: dict[TopicPartition, int | None] = {}
        self._expected_seq: dict[TopicPartition, int | None] = {}
        self._expected_dedup: dict[TopicPartition, int | None] = {}
        self._pending: dict[StateKey, KeyState] = {}
        self._pending_clocks: dict[ClockKey, PartitionClock] = {}
        self._kinds: dict[str, str] = {}  # topic -> kind, as process() saw them
        self._last_tick: dict[TopicPartition, float] = {}  # wall time of the newest fresh tick
        self._expired: dict[TopicPartition, float] = {}  # named for a marker this quiet spell: when
        self._clock: Callable[[], float] = time.monotonic
        self._kept_ids: dict[str, list[pl.DataFrame]] = {}
        self._kept_set: dict[str, KeptIds] = {}  # the same ids, for membership
        self._results: list[tuple[SequenceTracker, ClassifyResult]] = []
        self._topics: set[str] = set()
        self._lock = threading.Lock()
        self._frozen: list[_Frozen] = []  # prepared, not yet committed; oldest first

    def assign(self, partitions: list[TopicPartition]) -> Offsets:
        """Read each stage's token; return the lowest (``BEGINNING`` if a stage never committed it)."""
        out: Offsets = {}
        for tp in partitions:
            seq = self._floor_seq[tp] = self._expected_seq[tp] = self.store.token(*tp)
            marks = [BEGINNING if seq is None else seq]
            if tp[0] in self.dedup:
                dedup = self.dedup[tp[0]](tp[1])  # loaded now: it reflects the store as it is
                self.owned[tp] = dedup
                stored = dedup.store.tokens().get(tp)
                self._floor_dedup[tp] = self._expected_dedup[tp] = stored
                marks.append(BEGINNING if stored is None else stored)
            out[tp] = min(marks)
        return out

    def process(
        self, kind: str, topic: str, frame: pl.DataFrame, markers: Sequence[tuple[int, int, int | None]] = ()
    ) -> CheckResult:
        """Classify the rows each stage has not applied yet; keep everything but duplicates.

        ``markers`` are the (partition, offset, clock) of expire markers read with the batch: each
        partition's rows before a marker are classified, then its holes swept, then the rest, so
        the verdicts do not depend on where the batches were cut.
        """
        if not markers:
            return self._process(kind, topic, frame)
        by_part: dict[int, list[int]] = {}
        clock_at: dict[tuple[int, int], int | None] = {}
        for p, o, clock in sorted(markers, key=lambda m: (m[0], m[1])):
            by_part.setdefault(p, []).append(o)
            clock_at[(p, o)] = clock
        phase = np.zeros(frame.height, dtype=np.int64)
        if frame.height:
            parts = frame.get_column("_partition").to_numpy()
            offs = frame.get_column("_offset").to_numpy()
            for p, offsets in by_part.items():
                rows = parts == p
                phase[rows] = np.searchsorted(np.asarray(offsets), offs[rows])
        keep = np.ones(frame.height, dtype=bool)
        events: list[pl.DataFrame] = []
        for k in range(max(len(o) for o in by_part.values()) + 1):
            rows = np.flatnonzero(phase == k)
            if rows.size or k == 0:
                part = self._process(kind, topic, frame[rows] if rows.size < frame.height else frame)
                keep[rows] = part.keep.to_numpy()
                if part.gap_events is not None and part.gap_events.height:
                    events.append(part.gap_events)
            for p, offsets in by_part.items():
                if k >= len(offsets):
                    continue
                if (swept := self.sweep(kind, topic, p, offsets[k], clock_at[(p, offsets[k])])) is not None:
                    events.append(swept)
        gaps = pl.concat(events, how="vertical_relaxed") if events else None
        return CheckResult(keep=pl.Series("keep", keep, dtype=pl.Boolean), gap_events=gaps)

    def _process(self, kind: str, topic: str, frame: pl.DataFrame) -> CheckResult:
        self._topics.add(topic)
        self._kinds[topic] = kind
        keep = pl.Series("keep", [True] * frame.height, dtype=pl.Boolean)
        if frame.is_empty():
            return CheckResult(keep=keep)
        now = self._clock()
        for p in frame.get_column("_partition").unique().to_list():
            self._last_tick[(topic, p)] = now
            self._expired.pop((topic, p), None)
        fresh = _fresh(frame, topic, self._floor_seq)
        tracker = self._tracker(kind)
        batch = frame.filter(fresh) if not fresh.all() else frame
        gaps = None
        if batch.height:
            clocks = self._clocks(tracker.clock_keys(batch))
            result = tracker.classify(batch, self._states(tracker.keys(batch, clocks)), clocks)
            self._pending.update(result.states)
            self._pending_clocks.update(result.clocks)
            self._results.append((tracker, result))
            keep = keep.scatter(fresh.arg_true(), result.keep()) if not fresh.all() else result.keep()
            gaps = result.gaps.with_columns(pl.col("event").cast(pl.String)).rename(
                {"_partition": "kafka_partition", "_offset": "kafka_offset"}
            )
        if topic in self.dedup:
            keep = keep & ~self._dedup(topic, frame, keep)
        return CheckResult(keep=keep.alias("keep"), gap_events=gaps)

    def _states(self, keys: list[StateKey]) -> dict[StateKey, KeyState]:
        """Newest first: this checkpoint's states, then prepared ones not yet written, then the store.

        A prepared layer leaves the list only after its commit returned, so a key missing from the
        layers copied here is already in the store.
        """
        with self._lock:
            layers = [self._pending, *(f.states for f in reversed(self._frozen))]
        states: dict[StateKey, KeyState] = {}
        missing = keys
        for layer in layers:  # C-level passes per layer, not a Python branch per key (~14,000 at 1 M symbols)
            if not layer or not missing:
                continue
            got = list(map(layer.get, missing))
            hit = list(map(is_not, got, repeat(None)))
            states.update(zip(compress(missing, hit), compress(got, hit), strict=True))  # type: ignore[arg-type]
            missing = list(compress(missing, map(not_, hit)))
        if missing:
            states.update(self.store.load(missing))
        return states

    def _tracker(self, kind: str) -> SequenceTracker:
        tracker = self._trackers.get(kind)
        if tracker is None:
            tracker = self._trackers[kind] = SequenceTracker(
                kind,
                reorder_window=self.reorder_window,
                sessions_kept=self.sessions_kept,
                reorder_timeout=self.reorder_timeout,
            )
        return tracker

    def quiet(self, kinds: Mapping[str, str] | None = None) -> list[tuple[TopicPartition, int]]:
        """Owned partitions without a tick for ``reorder_timeout`` seconds of wall time whose exchange
        clock holds young holes, with that clock: their owner appends an expire marker carrying it
        (``k2.stream.control``). Each is named once per quiet spell, and again every 3 timeouts
        while its holes stay (a marker lost on the way, or one that found the clock moved).

        Args:
            kinds: topic -> kind of the source topics, for partitions no batch has reached yet
                (after a restart with nothing left to read, the stored state may hold holes).
        """
        if self.reorder_timeout is None:
            return []
        now = self._clock()
        out: list[tuple[TopicPartition, int]] = []
        for tp in list(self._floor_seq):
            topic, p = tp
            kind = self._kinds.get(topic) or (kinds or {}).get(topic)
            last = self._last_tick.setdefault(tp, now)
            named = self._expired.get(tp)
            if kind is None or now - last < self.reorder_timeout:
                continue
            if named is not None and now - named < 3 * self.reorder_timeout:
                continue
            clock = self._clocks([(kind, p)]).get((kind, p))  # may raise: then not named yet
            self._expired[tp] = now
            if clock is not None and clock.holes:
                out.append((tp, clock.now))
        return out

    def requiet(self, tp: TopicPartition) -> None:
        """Name ``tp`` again at the next :meth:`quiet` (its marker could not be sent)."""
        self._expired.pop(tp, None)

    def sweep(
        self, kind: str, topic: str, partition: int, offset: int, clock: int | None
    ) -> pl.DataFrame | None:
        """Record every young hole of the partition's clock now: an expire marker read at ``offset``.

        The wall-clock fallback, made a function of the stream: detected_at = each hole's opening +
        timeout (exchange time), lineage the marker's offset. Only if the partition's exchange clock
        is still the one the marker carries (``clock``, None: unreadable): a marker that lands behind
        newer ticks (a backlog, a paused partition, a former owner's marker) was decided on a stale
        view and sweeps nothing. Skipped below the stage's floor (the stored state holds that sweep).
        See :meth:`SequenceTracker.expire`.
        """
        if self.reorder_timeout is None or offset < (self._floor_seq.get((topic, partition)) or 0):
            return None
        self._topics.add(topic)
        self._kinds[topic] = kind
        tracker = self._tracker(kind)
        clocks = self._clocks([(kind, partition)])
        stored = clocks.get((kind, partition))
        if stored is None or not stored.holes or stored.now != clock:
            return None
        keys = [(kind, e, s) for c in clocks.values() for e, s, _ in c.holes]
        result = tracker.expire(clocks, self._states(keys))
        self._pending.update(result.states)
        self._pending_clocks.update(result.clocks)
        self._results.append((tracker, result))
        return result.gaps.with_columns(
            pl.col("event").cast(pl.String), pl.lit(offset, pl.Int64).alias("_offset")
        ).rename({"_partition": "kafka_partition", "_offset": "kafka_offset"})

    def _clocks(self, keys: list[ClockKey]) -> dict[ClockKey, PartitionClock]:
        """Partition clocks, newest layer first like :meth:`_states`."""
        if not keys:
            return {}
        with self._lock:
            layers = [self._pending_clocks, *(f.clocks for f in reversed(self._frozen))]
        out: dict[ClockKey, PartitionClock] = {}
        missing = []
        for k in keys:
            for layer in layers:
                c = layer.get(k)
                if c is not None:
                    out[k] = c
                    break
            else:
                missing.append(k)
        if missing:
            out.update(self.store.load_clocks(missing))
        return out

    def _dedup(self, topic: str, frame: pl.DataFrame, keep: pl.Series) -> pl.Series:
        """Duplicates by message id, also against ids kept earlier and not yet committed."""
        fresh = _fresh(frame, topic, self._floor_dedup)
        ids, ts = frame.get_column("message_id"), frame.get_column("exchange_ts")
        dup = pl.Series("dup", [False] * frame.height)
        rows = fresh.arg_true()
        if rows.len():
            sub_ids, sub_ts = ids.gather(rows), ts.gather(rows)
            sub_parts = frame.get_column("_partition").gather(rows)
            keys = id_bytes(sub_ids)
            found = self._check(topic, sub_ids, sub_ts, sub_parts.to_numpy(), keys)
            # kept earlier and not committed yet: this checkpoint's ids, then the frozen ones'; one
            # filter per layer, added to as batches pass, so each batch costs its own size, not the layers'
            with self._lock:
                frozen = [f.id_sets[topic] for f in self._frozen if f.id_sets.get(topic)]
            current = self._kept_set.get(topic)
            if current is None:  # not setdefault: a filter is 2 MB of zeros to allocate
                current = self._kept_set[topic] = KeptIds()
            for layer in (current, *frozen):
                if len(layer):
                    found |= layer.contains(keys)
            dup = dup.scatter(rows, pl.Series(found))
            new = (~found) & keep.gather(rows).to_numpy()
            current.add(keys[new])
            self._kept_ids.setdefault(topic, []).append(
                pl.DataFrame({"message_id": sub_ids, "exchange_ts": sub_ts, "_partition": sub_parts}).filter(
                    pl.Series(new)
                )
            )
        return dup

    def _check(
        self, topic: str, ids: pl.Series, ts: pl.Series, parts: np.ndarray, keys: np.ndarray
    ) -> np.ndarray:
        """Each partition's ids against that partition's own Deduplicator."""
        values = np.unique(parts)
        if values.size == 1:
            verdict = self._owner(topic, int(values[0])).check(ids, ts, keys=keys)
            return np.asarray(verdict.to_numpy(), dtype=bool)
        found = np.zeros(ids.len(), dtype=bool)
        for p in values.tolist():
            rows = np.flatnonzero(parts == p)
            idx = pl.Series(rows)
            verdict = self._owner(topic, p).check(ids.gather(idx), ts.gather(idx), keys=keys[rows])
            found[rows] = verdict.to_numpy()
        return found

    def _owner(self, topic: str, partition: int) -> Deduplicator:
        try:
            return self.owned[(topic, partition)]
        except KeyError:
            raise StateStoreError(
                f"{topic}[{partition}] is not assigned to this consumer: its dedup state is not loaded",
                backend="checks",
            ) from None

    def prepare(self, end: Offsets) -> Callable[[], None]:
        """Freeze this checkpoint's state and return the function that writes it, fenced by ``end``.

        The returned function raises StaleStateError (another consumer advanced a token; nothing of
        that stage written) or StateStoreError.
        """
        ours = {tp: o for tp, o in end.items() if tp[0] in self._topics}
        seq_tokens = [_advance(tp, o, self._expected_seq) for tp, o in ours.items()]
        # each partition's ids go to its own Deduplicator, the one that judged them
        dedup_tokens = {
            tp: (self.owned[tp], _advance(tp, o, self._expected_dedup))
            for tp, o in ours.items()
            if tp[0] in self.dedup and tp in self.owned
        }
        frozen = _Frozen(self._pending, self._kept_ids, self._kept_set, self._results, self._pending_clocks)
        self._pending, self._kept_ids, self._kept_set, self._results = {}, {}, {}, []
        self._pending_clocks = {}
        with self._lock:
            self._frozen.append(frozen)

        def commit() -> None:
            self.store.commit(frozen.states, seq_tokens, frozen.clocks)
            frozen.states, frozen.clocks = {}, {}  # in the store now; the layer stays for its dedup ids
            kept = {topic: pl.concat(frames) for topic, frames in frozen.ids.items() if frames}
            for (topic, partition), (d, token) in dedup_tokens.items():
                ids = kept.get(topic)
                if ids is not None and ids.height:
                    ids = ids.filter(pl.col("_partition") == partition)
                else:
                    ids = pl.DataFrame({"message_id": [], "exchange_ts": []})
                d.commit(ids.get_column("message_id"), ids.get_column("exchange_ts"), [token])
            with self._lock:
                self._frozen = [f for f in self._frozen if f is not frozen]
            for tracker, result in frozen.results:
                tracker.observe(result)

        return commit

    def revoke(self, partitions: list[TopicPartition]) -> None:
        """Drop all uncommitted work (the checkpoint drops its buffers for every partition alike),
        and the dedup state of the partitions that leave (saved first, for a quick return)."""
        self._pending, self._kept_ids, self._kept_set, self._results = {}, {}, {}, []
        self._pending_clocks = {}
        with self._lock:
            self._frozen = []
        for tp in partitions:
            self._last_tick.pop(tp, None)
            self._expired.pop(tp, None)
            for known in (self._floor_seq, self._floor_dedup, self._expected_seq, self._expected_dedup):
                known.pop(tp, None)
            dedup = self.owned.pop(tp, None)
            if dedup is not None:
                dedup.persist()

    def close(self) -> None:
        """After a clean stop's final commit: save the owned filters, release the stores."""
        for dedup in self.owned.values():
            dedup.persist()
            dedup.store.close()
        self.owned.clear()
        self.store.close()


class _Frozen:
    """One prepared checkpoint: its states, its kept ids per topic (rows and set), its results to observe."""

    __slots__ = ("clocks", "id_sets", "ids", "results", "states")

    def __init__(
        self,
        states: dict[StateKey, KeyState],
        ids: dict[str, list[pl.DataFrame]],
        id_sets: dict[str, KeptIds],
        results: list[tuple[SequenceTracker, ClassifyResult]],
        clocks: dict[ClockKey, PartitionClock],
    ) -> None:
        self.states = states
        self.clocks = clocks
        self.ids = ids
        self.id_sets = id_sets
        self.results = results


def _fresh(frame: pl.DataFrame, topic: str, floors: Mapping[TopicPartition, int | None]) -> pl.Series:
    """Rows at or beyond the stage's floor for their partition (not applied before this assignment)."""
    floor = {p: floors.get((topic, p)) or 0 for p in frame.get_column("_partition").unique().to_list()}
    if not any(floor.values()):
        return pl.Series("fresh", [True] * frame.height, dtype=pl.Boolean)
    return frame.select(
        pl.col("_offset") >= pl.col("_partition").replace_strict(floor, return_dtype=pl.Int64)
    ).to_series()


def _advance(tp: TopicPartition, offset: int, expected: dict[TopicPartition, int | None]) -> PartitionToken:
    """The token moving tp from what the store will hold to ``offset``; records the new expectation."""
    before = expected.get(tp)
    token = PartitionToken(tp[0], tp[1], before, max(offset, before or 0))
    expected[tp] = token.offset
    return token
