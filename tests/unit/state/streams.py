"""Faulty tick streams and a batch runner shared by the state tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from itertools import pairwise

import numpy as np
import polars as pl

from k2.state.model import ClockKey, KeyState, PartitionClock, StateKey
from k2.state.synthetic import make_batch
from k2.state.tracker import SequenceTracker
from tests.unit.state.reference import ReferenceTracker

__all__ = ["D0", "T0", "event_tuples", "faulty_stream", "reference_run", "stream_batch", "tracker_run"]

D0 = date(2024, 3, 4)
T0 = 1_709_510_400_000_000
Row = tuple[str, str, date, int]


def faulty_stream(
    rng: np.random.Generator,
    *,
    keys: int = 4,
    sessions: int = 3,
    length: tuple[int, int] = (30, 160),
    p_drop: float = 0.06,
    p_dup: float = 0.04,
    p_swap: float = 0.05,
    p_late: float = 0.5,
    p_resend: float = 0.0,
) -> list[Row]:
    """Per key: sessions of consecutive sequences, with drops (half delivered late, maybe much later,
    maybe after the next session began), duplicates and local swaps; keys interleaved at random.
    With ``p_resend``, a key may end with one of its earlier sessions sent again whole (a replay)."""
    per_key: list[list[Row]] = []
    for k in range(keys):
        ex, sym = ("ASX", "SIM")[k % 2], f"K{k}"
        out: list[Row] = []
        for s in range(sessions):
            day = D0 + timedelta(days=s)
            for q in range(1, int(rng.integers(*length)) + 1):
                row = (ex, sym, day, q)
                if rng.random() < p_drop:
                    if rng.random() < p_late:  # delivered later: 1..400 ticks on
                        late_at = len(out) + int(rng.integers(1, 400))
                        out.append(("LATE", str(late_at), day, q))
                    continue
                out.append(row)
                if rng.random() < p_dup:
                    back = out[max(0, len(out) - 1 - int(rng.integers(0, 50)))]
                    if back[0] != "LATE":
                        out.append(back)
        per_key.append(_place_late(out, ex, sym))
        if rng.random() < p_resend:
            day = D0 + timedelta(days=int(rng.integers(0, sessions)))
            per_key[-1].extend(r for r in per_key[-1][:] if r[2] == day)
        for _ in range(int(p_swap * len(per_key[-1]))):
            i = int(rng.integers(0, len(per_key[-1]) - 1))
            j = min(len(per_key[-1]) - 1, i + int(rng.integers(1, 12)))
            per_key[-1][i], per_key[-1][j] = per_key[-1][j], per_key[-1][i]
    # interleave keys, keeping each key's own order
    owners = np.concatenate([np.full(len(rows), k) for k, rows in enumerate(per_key)])
    rng.shuffle(owners)
    cursors = [0] * keys
    merged: list[Row] = []
    for k in owners.tolist():
        merged.append(per_key[k][cursors[k]])
        cursors[k] += 1
    return merged


def _place_late(rows: list[Row], ex: str, sym: str) -> list[Row]:
    placed: list[Row] = []
    pending: list[tuple[int, Row]] = []
    for i, row in enumerate(rows):
        if row[0] == "LATE":
            pending.append((int(row[1]), (ex, sym, row[2], row[3])))
            continue
        placed.append(row)
        due = [p for p in pending if p[0] <= i]
        pending = [p for p in pending if p[0] > i]
        placed.extend(r for _, r in due)
    placed.extend(r for _, r in pending)
    return placed


def reference_run(
    rows: Sequence[Row], window: int, batch: pl.DataFrame, kept: int = 10, timeout: int | None = None
) -> tuple[list[str], list[tuple]]:
    ref = ReferenceTracker(window, kept, timeout)
    ts = batch["exchange_ts"].dt.epoch("us").to_list()
    mids = batch["message_id"].to_list()
    parts = batch["_partition"].to_list()
    verdicts = [
        ref.step(i, ex, sym, (d - date(1970, 1, 1)).days, q, ts[i], mids[i], parts[i])
        for i, (ex, sym, d, q) in enumerate(rows)
    ]
    events = [
        (e, ex, sym, date(1970, 1, 1) + timedelta(days=s), a, b, det, rec, by)
        for _, e, ex, sym, s, a, b, det, rec, by in ref.events
    ]
    return verdicts, events


def event_tuples(gaps: pl.DataFrame) -> list[tuple]:
    g = gaps.with_columns(pl.col("detected_at", "recovered_at").dt.epoch("us"))
    return list(
        g.select(
            "event", "exchange", "symbol", "session", "first_missing", "last_missing", "detected_at",
            "recovered_at", "recovered_by",
        ).iter_rows()
    )  # fmt: skip


def tracker_run(
    tracker: SequenceTracker,
    batch: pl.DataFrame,
    cuts: Sequence[int],
    states: Mapping[StateKey, KeyState] | None = None,
    clocks: dict[ClockKey, PartitionClock] | None = None,
) -> tuple[list[str], list[tuple], dict[StateKey, KeyState]]:
    """Classify batch split at cuts, carrying state (and ``clocks``, updated in place) from one piece
    to the next like a store would."""
    state = dict(states or {})
    clocks = {} if clocks is None else clocks
    verdicts: list[str] = []
    events: list[tuple] = []
    bounds = [0, *sorted(set(cuts)), batch.height]
    for a, b in pairwise(bounds):
        if b <= a:
            continue
        piece = batch.slice(a, b - a)
        mine = {k: clocks[k] for k in tracker.clock_keys(piece) if k in clocks}
        keys = tracker.keys(piece, mine)
        result = tracker.classify(piece, {k: state[k] for k in keys if k in state}, mine)
        verdicts.extend(result.verdicts.cast(pl.String).to_list())
        events.extend(event_tuples(result.gaps))
        assert set(result.states) <= set(keys) and set(tracker.keys(piece)) <= set(result.states)
        state.update(result.states)
        clocks.update(result.clocks)
    return verdicts, events, state


def stream_batch(rows: Sequence[Row], ts: Sequence[int] | None = None) -> pl.DataFrame:
    return make_batch("trades", rows, ts=ts if ts is not None else [T0 + 1000 * i for i in range(len(rows))])
