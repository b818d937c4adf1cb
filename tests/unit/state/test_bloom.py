"""The windowed Bloom filter: memory within the formula, measured false positives, rotation, files."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from k2.state.bloom import WindowedBloom, bits_per_key, id_hashes


def _ids(n: int, seed: int) -> list[str]:
    raw = np.random.default_rng(seed).bytes(16 * n).hex()
    return [raw[i : i + 32] for i in range(0, 32 * n, 32)]


def test_memory_at_ten_million_ids_is_within_the_formula() -> None:
    bloom = WindowedBloom(capacity=10_000_000, error_rate=0.001, generations=4)
    per_key = bloom.full_nbytes() / 10_000_000
    formula = bits_per_key(0.001) / 8  # 1.44 * log2(1000) / 8
    assert math.isclose(formula, 1.797, rel_tol=1e-3)
    assert per_key <= 2.0
    assert abs(per_key - formula) / formula < 0.01


def test_measured_false_positive_rate_matches_the_formula() -> None:
    capacity, generations, p = 1_000_000, 4, 0.001
    bloom = WindowedBloom(capacity=capacity, error_rate=p, generations=generations)
    members = _ids(capacity, seed=1)
    per_gen = capacity // generations
    for g in range(generations):
        bloom.rotate(100 + g)
        bloom.add(100 + g, id_hashes(members[g * per_gen : (g + 1) * per_gen]))
    assert bloom.contains(id_hashes(members[:50_000])).all(), "a Bloom filter has no false negatives"
    probes = _ids(1_000_000, seed=2)
    measured = bloom.contains(id_hashes(probes)).mean()
    expected = 1 - (1 - p) ** generations  # every generation full
    assert 0.8 * expected < measured < 1.2 * expected, (measured, expected)


def test_rotation_keeps_the_newest_generations_only() -> None:
    bloom = WindowedBloom(capacity=1000, error_rate=0.001, generations=3)
    ids = _ids(4, seed=3)
    for g, i in zip(range(10, 14), ids, strict=True):
        bloom.rotate(g)
        bloom.add(g, id_hashes([i]))
    assert bloom.live() == [11, 12, 13] and sorted(bloom.filters) == [11, 12, 13]
    assert bloom.contains(id_hashes(ids)).tolist() == [False, True, True, True]
    assert bloom.rotate(12) == []  # time going backwards changes nothing
    assert bloom.rotate(20) == [11, 12, 13]
    assert not bloom.contains(id_hashes(ids)).any()


def test_save_and_read_round_trip(tmp_path: Path) -> None:
    bloom = WindowedBloom(capacity=10_000, error_rate=0.01, generations=2)
    ids = _ids(100, seed=4)
    bloom.rotate(7)
    bloom.add(6, id_hashes(ids[:50]))
    bloom.add(7, id_hashes(ids[50:]))
    path = tmp_path / "b.bloom"
    bloom.save(path, {"tokens": [["t", 0, 5]]})
    again, header = WindowedBloom.read(path)
    assert header["tokens"] == [["t", 0, 5]] and again.current == 7
    assert again.contains(id_hashes(ids)).all()
    assert again.nbytes == bloom.nbytes
    assert not os.path.exists(str(path) + ".tmp")


def test_hashes_fit_rbloom_signed_128_bits() -> None:
    lo, hi = id_hashes(["0" * 32, "f" * 32])
    assert lo == -(2**127) and hi == 2**127 - 1
