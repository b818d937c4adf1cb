"""split: keep/defer masks by tier, vectorised over the symbol column."""

from __future__ import annotations

import sys

import numpy as np
import polars as pl
import pytest

from k2.config.resilience import ResilienceSettings
from k2.resilience.levels import Level, actions_for
from k2.resilience.shed import split
from k2.resilience.tiers import PriorityTiers
from tests.unit.resilience.conftest import FakeClock

S = ResilienceSettings(tier1_fraction=0.2, tier2_fraction=0.3)
# symbols S0..S9 with falling activity: tiers 1,1,2,2,2,3,3,3,3,3
COUNTS = {f"S{i}": 100 - 10 * i for i in range(10)}
TIER = {f"S{i}": (1 if i < 2 else 2 if i < 5 else 3) for i in range(10)}


@pytest.fixture
def tiers(clock: FakeClock) -> PriorityTiers:
    t = PriorityTiers(S, clock)
    symbols = [s for s, n in COUNTS.items() for _ in range(n)]
    t.observe(pl.DataFrame({"exchange": ["SIM"] * len(symbols), "symbol": symbols}))
    return t


def batch(n: int, seed: int = 7) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    symbols = np.array(list(COUNTS))[rng.integers(0, 10, n)]
    return pl.DataFrame({"exchange": ["SIM"] * n, "symbol": symbols, "sequence": np.arange(n)})


@pytest.mark.parametrize(
    ("level", "deferred_tiers"),
    [
        (Level.NORMAL, set()),
        (Level.SOFT, set()),
        (Level.GRACEFUL, {3}),
        (Level.AGGRESSIVE, {2, 3}),
        (Level.CIRCUIT_BREAK, {2, 3}),
    ],
)
def test_split_defers_exactly_the_level_tiers(
    tiers: PriorityTiers, level: Level, deferred_tiers: set[int]
) -> None:
    frame = batch(1000)
    keep, defer = split(frame, tiers, actions_for(level, S))
    assert keep.dtype == defer.dtype == pl.Boolean
    assert keep.len() == defer.len() == frame.height
    assert (keep ^ defer).all()  # every row is either written or deferred: nothing falls through
    expected = [TIER[s] in deferred_tiers for s in frame["symbol"].to_list()]
    assert defer.to_list() == expected
    assert frame.filter(keep).height + frame.filter(defer).height == frame.height


def test_split_of_an_empty_batch(tiers: PriorityTiers) -> None:
    empty = batch(0)
    for level in Level:
        keep, defer = split(empty, tiers, actions_for(level, S))
        assert keep.len() == defer.len() == 0


def test_split_keeps_row_order_for_gathering_payloads(tiers: PriorityTiers) -> None:
    frame = batch(500)
    _, defer = split(frame, tiers, actions_for(Level.AGGRESSIVE, S))
    seq = frame.filter(defer)["sequence"].to_list()
    assert seq == sorted(seq) and len(seq) > 0


def test_split_is_vectorised(tiers: PriorityTiers) -> None:
    """No Python call per row: splitting 1,000,000 rows makes as many Python calls as 1,000 rows
    (counted with a profiler hook, so the check holds on a loaded machine; speed is benchmarked)."""
    actions = actions_for(Level.GRACEFUL, S)

    def python_calls(rows: int) -> tuple[int, int]:
        frame = batch(rows)
        split(frame, tiers, actions)  # warm-up: imports and caches
        calls = [0]

        def count(_frame: object, event: str, _arg: object) -> None:
            if event == "call":
                calls[0] += 1

        sys.setprofile(count)
        try:
            _, defer = split(frame, tiers, actions)
        finally:
            sys.setprofile(None)
        return calls[0], int(defer.sum())

    small, big = python_calls(1_000), python_calls(1_000_000)
    assert big[1] > 0
    assert big[0] <= small[0] + 10, f"{big[0]} Python calls for 1M rows against {small[0]} for 1,000"
