"""The tracker's vectorised fast path gives exactly what folding every key tick by tick gives.

``SequenceTracker._simple`` decides with whole-array tests which keys of a batch only continue their
stored mark; the rest are folded by ``KeyFold``. With ``_fast_path = False`` every key is folded,
which is the per-key reference here: on random faulty streams (gaps, duplicates, swaps, late fills,
re-sent sessions, the time bound over several partitions) cut at random batch boundaries, each
piece must give the same verdicts, gap events (lineage included), states and clocks either way,
from the same input. The batch codecs (``encode_states`` / ``decode_states``) must equal the
per-state ones byte for byte.
"""

from __future__ import annotations

import struct
from itertools import pairwise
from typing import Any

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from k2.state.groups import BatchGroups
from k2.state.model import (
    ClockKey,
    KeyState,
    PartitionClock,
    StateKey,
    decode_state,
    decode_states,
    encode_state,
    encode_states,
    plain_state,
)
from k2.state.tracker import SequenceTracker
from tests.unit.state.streams import D0, T0, faulty_stream, stream_batch


class _Counting(SequenceTracker):
    """Counts the key groups the fast path left to the fold, to show the fast path was taken."""

    groups = 0
    folded = 0

    def _fold(self, batch: pl.DataFrame, groups: BatchGroups, irregular: list[int], *args: Any) -> None:
        self.groups += len(groups.starts)
        self.folded += len(irregular)
        super()._fold(batch, groups, irregular, *args)


def _stream(seed: int) -> tuple[pl.DataFrame, int, int, float | None]:
    rng = np.random.default_rng(seed)
    window = int(rng.choice([0, 1, 4, 16, 64]))
    kept = int(rng.choice([1, 2, 10]))
    timeout = None if seed % 3 == 0 else int(rng.choice([1, 3, 20, 150])) * 1000
    faults = float(rng.choice([0.002, 0.02, 0.08]))  # mostly clean (fast path) to very faulty
    rows = faulty_stream(
        rng, keys=int(rng.integers(3, 40)), sessions=int(rng.integers(1, 4)), length=(1, 90),
        p_drop=faults, p_dup=faults / 2, p_swap=faults / 2, p_resend=0.3,
    )  # fmt: skip
    ts = (T0 + 1000 * np.arange(len(rows)) + rng.integers(-4000, 4000, len(rows))).tolist()
    batch = stream_batch(rows, ts)
    parts = int(rng.integers(1, 5))
    batch = batch.with_columns((pl.col("symbol").str.slice(1).cast(pl.Int32) % parts).alias("_partition"))
    return batch, window, kept, None if timeout is None else timeout / 1e6


def _compare_pieces(seed: int, cuts_count: int, *, break_fast_path: bool = False) -> tuple[int, int]:
    """Run both trackers piece by piece from the same input; assert equal; (groups, folded)."""
    batch, window, kept, timeout = _stream(seed)
    args: dict[str, Any] = {"reorder_window": window, "sessions_kept": kept, "reorder_timeout": timeout}
    fast, slow = _Counting("trades", **args), SequenceTracker("trades", **args)
    slow._fast_path = False
    if break_fast_path:  # every key "simple": folds nothing, so gaps go unseen
        original = fast._simple

        def broken(groups: BatchGroups, *rest: Any) -> Any:
            groups.simple = np.ones_like(groups.simple)
            return original(groups, *rest)

        fast._simple = broken  # type: ignore[method-assign]
    rng = np.random.default_rng(seed + 1000)
    cuts = sorted(set(rng.choice(batch.height, size=min(cuts_count, batch.height), replace=False).tolist()))
    states: dict[StateKey, KeyState] = {}
    clocks: dict[ClockKey, PartitionClock] = {}
    for a, b in pairwise([0, *cuts, batch.height]):
        if b <= a:
            continue
        piece = batch.slice(a, b - a)
        mine = {k: clocks[k] for k in fast.clock_keys(piece) if k in clocks}
        keys = fast.keys(piece, mine)
        assert keys == slow.keys(piece, mine)
        given = {k: states[k] for k in keys if k in states}
        got, want = fast.classify(piece, given, mine), slow.classify(piece, given, mine)
        assert got.verdicts.to_list() == want.verdicts.to_list()
        assert_frame_equal(got.gaps, want.gaps)
        assert got.states == want.states
        assert got.clocks == want.clocks
        assert got.detection_s == want.detection_s
        states.update(got.states)
        clocks.update(got.clocks)
    return fast.groups, fast.folded


@pytest.mark.parametrize("seed", range(16))
def test_fast_path_gives_what_folding_every_key_gives(seed: int) -> None:
    groups, folded = 0, 0
    for cuts in (0, 7, 60, 400):
        g, f = _compare_pieces(seed, cuts)
        groups, folded = groups + g, folded + f
    assert folded < groups, "the fast path should take some keys"


def test_the_comparison_catches_a_wrong_fast_path() -> None:
    """A fast path that takes keys it must fold (here: gaps) fails the comparison above."""
    failures = 0
    for seed in range(6):
        try:
            _compare_pieces(seed, 60, break_fast_path=True)
        except AssertionError:
            failures += 1
    assert failures >= 4  # a stream whose faults all break the run's first tick can slip through


def _random_state(rng: np.random.Generator) -> KeyState:
    def ranges(n: int) -> tuple[tuple[int, int, int, int, int], ...]:
        return tuple(tuple(int(x) for x in rng.integers(0, 2**40, 5)) for _ in range(n))  # type: ignore[misc]

    shape = int(rng.integers(0, 5))
    session, hwm = int(rng.integers(0, 30_000)), int(rng.integers(0, 2**50))
    if shape == 0:
        return plain_state(session, hwm)
    if shape == 1:
        return plain_state(session, hwm, int(rng.integers(-5, 30_000)), int(rng.integers(0, 2**40)))
    if shape == 2:
        return KeyState(session, hwm, ranges(int(rng.integers(1, 4))))
    older = tuple((int(rng.integers(0, 30_000)), int(rng.integers(0, 99)), ranges(int(rng.integers(0, 3))))
                  for _ in range(int(rng.integers(0, 4))))  # fmt: skip
    return KeyState(session, hwm, ranges(int(rng.integers(0, 3))), session - 1, 7, ranges(int(rng.integers(0, 3))),
                    older)  # fmt: skip


@pytest.mark.parametrize("seed", range(4))
def test_batch_codecs_equal_the_per_state_ones(seed: int) -> None:
    rng = np.random.default_rng(seed)
    states = [_random_state(rng) for _ in range(500)]
    assert plain_state(3, 9) == KeyState(3, 9) and plain_state(3, 9, 2, 4) == KeyState(3, 9, (), 2, 4)
    encoded = encode_states(states)
    assert encoded == [encode_state(s) for s in states]
    assert decode_states(encoded) == [decode_state(b) for b in encoded] == states
    assert decode_states([]) == [] and encode_states([]) == []


def test_decode_states_refuses_what_decode_state_refuses() -> None:
    plain = encode_state(plain_state(1, 2))
    bad_version = b"\x07" + plain[1:]
    with pytest.raises(ValueError, match="version"):
        decode_states([plain, bad_version])
    claims_a_range = bytearray(plain)
    claims_a_range[-8] = 1  # 33 bytes but a range count of 1
    with pytest.raises(ValueError):
        decode_states([bytes(claims_a_range), plain])
    with pytest.raises((ValueError, struct.error)):  # as decode_state does
        decode_states([plain[:20]])


def test_a_key_its_clock_names_but_never_stored_leaves_the_clock_as_the_fold_leaves_it() -> None:
    """Found by review: a key the partition clock's young-hole index names as due, with no stored
    state (lost from the store), kept its stale entry on the fast path; the fold drops it."""
    rows = [("XNAS", "S1", D0, 1), ("XNAS", "S1", D0, 2), ("XNAS", "S2", D0, 1)]
    batch = stream_batch(rows, [T0 + 60_000_000, T0 + 60_001_000, T0 + 60_002_000])
    batch = batch.with_columns(pl.lit(0, pl.Int32).alias("_partition"))
    clocks = {("trades", 0): PartitionClock(T0, (("XNAS", "S1", T0),))}  # aged 60 s later at a 1 s bound
    fast = SequenceTracker("trades", reorder_window=4, reorder_timeout=1.0)
    slow = SequenceTracker("trades", reorder_window=4, reorder_timeout=1.0)
    slow._fast_path = False
    got, want = fast.classify(batch, {}, clocks), slow.classify(batch, {}, clocks)
    assert got.verdicts.to_list() == want.verdicts.to_list()
    assert got.states == want.states
    assert got.clocks == want.clocks
