"""The windowed Bloom filter: memory within the formula, measured false positives, rotation, files."""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from k2.state.bloom import WindowedBloom, bits_per_key
from k2.state.ids import ID_DTYPE, id_bytes


def _keys(n: int, seed: int) -> np.ndarray:
    return np.frombuffer(np.random.default_rng(seed).bytes(16 * n), dtype=ID_DTYPE)


def _ids(n: int, seed: int) -> list[str]:
    raw = _keys(n, seed).tobytes().hex()
    return [raw[i : i + 32] for i in range(0, 32 * n, 32)]


def test_memory_at_ten_million_ids_is_within_the_formula() -> None:
    bloom = WindowedBloom(capacity=10_000_000, error_rate=0.001, generations=4)
    per_key = bloom.full_nbytes() / 10_000_000
    formula = bits_per_key(0.001) / 8  # 1.44 * log2(1000) / 8
    assert math.isclose(formula, 1.797, rel_tol=1e-3)
    assert per_key <= 2.0
    assert abs(per_key - formula) / formula < 0.01
    assert bloom.k == 10


def test_measured_false_positive_rate_at_ten_million_keys_matches_the_formula() -> None:
    capacity, generations, p = 10_000_000, 4, 0.001
    bloom = WindowedBloom(capacity=capacity, error_rate=p, generations=generations)
    members = _keys(capacity, seed=1)
    per_gen = capacity // generations
    for g in range(generations):
        bloom.rotate(100 + g)
        bloom.add(100 + g, members[g * per_gen : (g + 1) * per_gen])
    assert bloom.nbytes / capacity <= 2.0
    # no false negatives: every member, claimed by its own generation
    claims = bloom.claims(members)
    for g in range(generations):
        assert claims[100 + g][g * per_gen : (g + 1) * per_gen].all()
    probes = _keys(2_000_000, seed=2)
    per_generation = [float(c.mean()) for c in bloom.claims(probes).values()]
    assert all(0.85 * p < rate < 1.15 * p for rate in per_generation), per_generation
    measured = bloom.contains(probes).mean()
    expected = 1 - (1 - p) ** generations  # every generation full
    assert 0.9 * expected < measured < 1.1 * expected, (measured, expected)


def test_no_false_negatives_for_hex_ids_and_odd_sizes() -> None:
    bloom = WindowedBloom(capacity=1000, error_rate=0.4, generations=1)  # k = 1, tiny and overfull
    ids = _ids(70_000, seed=5)  # more than one vectorised chunk
    bloom.add(0, ids)
    assert bloom.contains(ids).all()
    assert bloom.contains(id_bytes(ids)).all()
    extreme = ["0" * 32, "f" * 32]
    bloom.add(0, extreme)
    assert bloom.contains(extreme).all()


def test_add_and_contains_across_generations_and_rotation() -> None:
    bloom = WindowedBloom(capacity=1000, error_rate=0.001, generations=3)
    ids = _ids(4, seed=3)
    for g, i in zip(range(10, 14), ids, strict=True):
        bloom.rotate(g)
        bloom.add(g, [i])
    assert bloom.live() == [11, 12, 13] and sorted(bloom.filters) == [11, 12, 13]
    assert bloom.contains(ids).tolist() == [False, True, True, True]
    claims = bloom.claims(ids)
    assert {g: c.tolist() for g, c in claims.items()} == {
        11: [False, True, False, False],
        12: [False, False, True, False],
        13: [False, False, False, True],
    }
    bloom.add(9, [ids[0]])  # older than the window: ignored
    assert not bloom.contains([ids[0]]).any()
    assert bloom.rotate(12) == []  # time going backwards changes nothing
    bloom.add(15, [ids[0]])  # a newer generation rotates the window first
    assert bloom.live() == [13, 14, 15] and sorted(bloom.filters) == [13, 15]
    assert bloom.contains(ids).tolist() == [True, False, False, True]
    assert bloom.rotate(20) == [13, 15]
    assert not bloom.contains(ids).any()


def test_save_and_read_round_trip(tmp_path: Path) -> None:
    bloom = WindowedBloom(capacity=10_000, error_rate=0.01, generations=2)
    ids = _ids(100, seed=4)
    bloom.rotate(7)
    bloom.add(6, ids[:50])
    bloom.add(7, ids[50:])
    path = tmp_path / "b.bloom"
    bloom.save(path, {"tokens": [["t", 0, 5]]})
    again, header = WindowedBloom.read(path)
    assert header["tokens"] == [["t", 0, 5]] and again.current == 7
    assert sorted(again.filters) == [6, 7]
    assert all((again.filters[g] == bloom.filters[g]).all() for g in (6, 7))
    assert again.contains(ids).all()
    assert again.nbytes == bloom.nbytes
    assert not os.path.exists(str(path) + ".tmp")


def test_files_of_another_layout_or_truncated_are_refused(tmp_path: Path) -> None:
    head = json.dumps({"format": "k2-dedup-bloom/1", "capacity": 10_000, "error_rate": 0.01,
                       "generations": 2, "current": 7, "filters": [[7, 16]]}).encode()  # fmt: skip
    old = tmp_path / "old.bloom"  # what the rbloom version wrote: no "bloom" layout key
    old.write_bytes(struct.pack("<Q", len(head)) + head + b"\0" * 16)
    with pytest.raises(ValueError, match="layout"):
        WindowedBloom.read(old)
    bloom = WindowedBloom(capacity=10_000, error_rate=0.01, generations=2)
    bloom.add(3, _ids(10, seed=6))
    path = tmp_path / "b.bloom"
    bloom.save(path, {})
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match="truncated"):
        WindowedBloom.read(path)


def test_positions_stay_in_range_on_both_mappings() -> None:
    bloom = WindowedBloom(capacity=1000, error_rate=0.001, generations=1)
    keys = np.concatenate([_keys(5000, seed=7), id_bytes(["0" * 32, "f" * 32])])
    for m in (bloom.m, (1 << 32) + 8 * 12345):  # multiply-shift, then modulo above 2^32 bits
        bloom.m = m
        idx, mask = bloom._positions(keys)
        assert idx.shape == mask.shape == (bloom.k, keys.size)
        assert idx.min() >= 0 and idx.max() < m // 8
        assert set(np.unique(mask).tolist()) <= {1 << b for b in range(8)}


@pytest.mark.parametrize("fill", [2_000, 20_000, 200_000])
def test_claims_equal_testing_every_position_of_every_id(fill: int) -> None:
    """Later positions are computed only for the ids the first ones kept: the answers must not move."""
    bloom = WindowedBloom(capacity=20_000, error_rate=0.001, generations=2)
    bloom.add(5, _keys(fill, seed=1))
    bloom.add(6, _keys(fill // 2, seed=2))
    asked = np.concatenate([_keys(30_000, seed=3), _keys(fill, seed=1)[:500]])
    idx, mask = bloom._positions(asked)
    claims = bloom.claims(asked)
    assert set(claims) == {5, 6}
    for g, bits in bloom.filters.items():
        every = ((bits[idx] & mask) != 0).all(axis=0)
        assert np.array_equal(claims[g], every)
    assert claims[5][-500:].all()
