"""The kept-id layer: exact answers behind a blocked Bloom filter, whatever the filter claims."""

from __future__ import annotations

import os

import numpy as np
import pytest

from k2.state.ids import ID_DTYPE
from k2.state.kept import KeptIds


def _keys(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2**63, size=2 * n, dtype=np.uint64).view(ID_DTYPE)


def test_held_ids_are_found_and_others_are_not_across_many_runs() -> None:
    kept = KeptIds(capacity=50_000)
    batches = [_keys(5_000, seed) for seed in range(12)]  # more runs than are held before a merge
    for b in batches:
        assert not kept.contains(b).any()
        kept.add(b)
    assert len(kept) == 60_000
    for b in batches:
        assert kept.contains(b).all()
    assert not kept.contains(_keys(20_000, 99)).any()


def test_a_filter_far_past_its_capacity_claims_everything_and_still_answers_exactly() -> None:
    kept = KeptIds(capacity=100)  # 64 words: every bit set after a few thousand ids
    held = _keys(20_000, 1)
    kept.add(held)
    other = _keys(5_000, 2)
    mixed = np.concatenate([other, held[:5_000]])
    assert kept.contains(mixed).tolist() == [False] * 5_000 + [True] * 5_000


def test_ids_sharing_their_first_half_are_told_apart() -> None:
    head = os.urandom(8)
    same = np.array([head + os.urandom(8) for _ in range(6)], dtype=ID_DTYPE)
    kept = KeptIds(capacity=1_000)
    kept.add(same[:2])
    kept.add(same[2:4])
    assert kept.contains(same).tolist() == [True, True, True, True, False, False]
    kept.add(same[4:5])
    assert kept.contains(same[::-1]).tolist() == [False, True, True, True, True, True]


@pytest.mark.parametrize("n", [0, 1])
def test_empty_and_single_inputs(n: int) -> None:
    kept = KeptIds()
    assert kept.contains(_keys(n)).size == n
    kept.add(_keys(n))
    assert len(kept) == n
    assert kept.contains(_keys(n)).all()
