"""Vectorised sequence classification of one micro-batch: verdicts, gap events, new states.

``SequenceTracker.classify`` is pure: the same batch and the same input states always give the same
result, and it writes nothing. That is what makes the pipeline's rebuild (replaying Kafka from the
store's token after a crash) reproduce exactly the states the lost commit would have written.

Most keys in a batch are *simple*: their ticks continue the stored high-water mark one by one, in
one session, with no young hole pending. A single Polars group-by finds them (first, last, count,
sessions, "every diff is 1"), and their new state is the old one with a higher mark; only the
remaining keys are folded tick by tick by :class:`~k2.state.fold.KeyFold`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import polars as pl

from k2.observability.logging import get_logger
from k2.state.errors import InvalidBatchError
from k2.state.fold import DUPLICATE, GapEventRow, KeyFold
from k2.state.groups import BatchGroups
from k2.state.metrics import state_metrics
from k2.state.model import GAP_EVENT_SCHEMA, VERDICT, VERDICTS, KeyState, StateKey

__all__ = ["REQUIRED_COLUMNS", "ClassifyResult", "SequenceTracker", "verdict_series"]

REQUIRED_COLUMNS = ("message_id", "exchange", "symbol", "session", "sequence", "exchange_ts")
_EPOCH = date(1970, 1, 1)
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
    """New state of every key in the batch: pass it to ``SequenceStore.commit``."""

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
    """

    def __init__(self, kind: str, *, reorder_window: int = 64, sessions_kept: int = 10) -> None:
        if reorder_window < 0:
            raise ValueError("reorder_window must be >= 0")
        if sessions_kept < 1:
            raise ValueError("sessions_kept must be >= 1")
        self.kind = kind
        self.reorder_window = reorder_window
        self.sessions_kept = sessions_kept
        # keys() groups the batch; classify() of the same batch object reuses that work once
        self._grouped: tuple[pl.DataFrame, BatchGroups] | None = None
        self._open_gaps: dict[StateKey, int] = {}  # for the k2_gaps_open gauge
        self._open_total = 0

    def keys(self, batch: pl.DataFrame) -> list[StateKey]:
        """The state keys of a batch, for ``SequenceStore.load``.

        Raises:
            InvalidBatchError: see :meth:`classify`.
        """
        _validate(batch)
        if batch.is_empty():
            return []
        groups = BatchGroups(batch)
        self._grouped = (batch, groups)
        kind = self.kind
        return [(kind, e, s) for e, s in zip(groups.exchanges, groups.symbols, strict=True)]

    def classify(self, batch: pl.DataFrame, states: Mapping[StateKey, KeyState]) -> ClassifyResult:
        """Classify every tick; return verdicts, gap events and the keys' new states.

        Args:
            batch: ticks with at least ``REQUIRED_COLUMNS``; per key in arrival (Kafka) order, which
                holds for a batch in Kafka order per partition since a key lives in one partition.
            states: stored states of (at least) the batch's keys; missing keys are new.

        Raises:
            InvalidBatchError: a required column is missing, or a sequence is null or < 1.
        """
        cached, self._grouped = self._grouped, None
        if cached is not None and cached[0] is batch:
            groups = cached[1]
        else:
            _validate(batch)
            if batch.is_empty():
                return ClassifyResult(
                    verdict_series(np.zeros(0, np.uint8)), pl.DataFrame(schema=GAP_EVENT_SCHEMA), {}
                )
            groups = BatchGroups(batch)
        codes = np.zeros(batch.height, dtype=np.uint8)
        kind, window = self.kind, self.reorder_window
        new_states: dict[StateKey, KeyState] = {}
        irregular: list[int] = []
        get = states.get
        for g, ex, sym, first, last, bad, smin, smax in groups.rows():
            key = (kind, ex, sym)
            st = get(key)
            if not bad and smin == smax:
                if st is None:
                    if first == 1:
                        new_states[key] = KeyState(smin, last)
                        continue
                elif (
                    st.session == smin
                    and first == st.hwm + 1
                    and (not st.ranges or _quiet(st, last - window))
                ):
                    new_states[key] = st._replace(hwm=last)
                    continue
            irregular.append(g)
        events: list[GapEventRow] = []
        if irregular:
            self._fold(batch, groups, irregular, states, codes, events, new_states)
        return ClassifyResult(verdict_series(codes), self._events(events, batch), new_states)

    def _fold(
        self,
        batch: pl.DataFrame,
        groups: BatchGroups,
        irregular: list[int],
        states: Mapping[StateKey, KeyState],
        codes: np.ndarray,
        events: list[GapEventRow],
        new_states: dict[StateKey, KeyState],
    ) -> None:
        """Fold the ticks of irregular keys one by one, each key in its own arrival order."""
        spans = [(groups.starts[g], groups.ends[g]) for g in irregular]
        rows = np.concatenate([groups.order[a:b] for a, b in spans])
        seqs = groups.seq[rows].tolist()
        sessions = groups.session[rows].tolist()
        times = batch.get_column("exchange_ts").dt.epoch("us").to_numpy()[rows].tolist()
        ids = batch.get_column("message_id").gather(rows).to_list()
        kind, window = self.kind, self.reorder_window
        pos = 0
        for g, (a, b) in zip(irregular, spans, strict=True):
            ex, sym = groups.exchanges[g], groups.symbols[g]
            fold = KeyFold(ex, sym, states.get((kind, ex, sym)), window, events, self.sessions_kept)
            for j in range(pos, pos + b - a):
                i = int(rows[j])
                fold.row = i
                code = fold.step(sessions[j], seqs[j], times[j], ids[j])
                if code:
                    codes[i] = code
            pos += b - a
            new_states[(kind, ex, sym)] = fold.state()

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
        for key, st in result.states.items():
            now = st.open_gaps()
            before = open_by_key.get(key, 0)
            if now != before:
                self._open_total += now - before
                if now:
                    open_by_key[key] = now
                else:
                    del open_by_key[key]
        m.gaps_open.labels(kind).set(self._open_total)
        if result.gaps.is_empty():
            return
        for row in result.gaps.iter_rows(named=True):
            fields = {
                "kind": kind, "exchange": row["exchange"], "symbol": row["symbol"],
                "session": row["session"].isoformat(), "first_missing": row["first_missing"],
                "last_missing": row["last_missing"], "size": row["size"],
            }  # fmt: skip
            if row["event"] == "opened":
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

    def _events(self, events: list[GapEventRow], batch: pl.DataFrame) -> pl.DataFrame:
        if not events:
            return pl.DataFrame(schema=GAP_EVENT_SCHEMA)
        events.sort(key=lambda e: e[0])  # stable: keeps each tick's own emission order
        rows, kinds, exs, syms, sess, firsts, lasts, det, rec, by = zip(*events, strict=True)
        lineage = {
            c: batch.get_column(c).gather(list(rows))
            if c in batch.columns
            else pl.repeat(None, len(rows), dtype=t, eager=True)
            for c, t in (("_partition", pl.Int32), ("_offset", pl.Int64))
        }
        return pl.DataFrame(
            {
                "event": kinds,
                "kind": [self.kind] * len(events),
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


def _quiet(state: KeyState, limit: int) -> bool:
    """No young hole of the state falls behind ``limit`` (so none gets recorded by this batch)."""
    return all(r[2] or r[1] >= limit for r in state.ranges)


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
