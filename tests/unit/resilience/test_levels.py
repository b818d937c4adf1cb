"""Each level maps to actions the pipeline can really apply."""

from __future__ import annotations

import pytest

from k2.config.resilience import ResilienceSettings
from k2.resilience.levels import MAX_CONSUME_BATCH, Actions, Level, actions_for

S = ResilienceSettings(aggressive_batch_multiplier=5, aggressive_commit_multiplier=3.0)


def test_normal_does_everything_and_backfills() -> None:
    a = actions_for(Level.NORMAL, S)
    assert a == Actions(frozenset(), 1, 1.0, skip_optional=False, consume=True, backfill=True)


def test_soft_only_skips_optional_work() -> None:
    a = actions_for(Level.SOFT, S)
    assert a.skip_optional and a.consume and not a.defer_tiers
    assert not a.backfill  # back-fill adds load: only at NORMAL
    assert (a.batch_multiplier, a.commit_interval_multiplier) == (1, 1.0)


def test_graceful_defers_the_lowest_tier() -> None:
    a = actions_for(Level.GRACEFUL, S)
    assert a.defer_tiers == {3}
    assert a.consume and a.skip_optional and not a.backfill
    assert (a.batch_multiplier, a.commit_interval_multiplier) == (1, 1.0)


def test_aggressive_defers_all_but_the_top_tier_with_bigger_batches_and_fewer_commits() -> None:
    a = actions_for(Level.AGGRESSIVE, S)
    assert a.defer_tiers == {2, 3}
    assert a.consume and a.skip_optional and not a.backfill
    assert a.batch_size(50_000) == 250_000
    assert a.commit_interval(1.0) == 3.0


def test_circuit_break_stops_consuming() -> None:
    a = actions_for(Level.CIRCUIT_BREAK, S)
    assert not a.consume and not a.backfill
    assert a.defer_tiers == {2, 3}  # a batch already in hand is still split like AGGRESSIVE


@pytest.mark.parametrize("level", list(Level))
def test_batch_size_stays_within_librdkafka_limit(level: Level) -> None:
    a = actions_for(level, ResilienceSettings(aggressive_batch_multiplier=100))
    assert 1 <= a.batch_size(900_000) <= MAX_CONSUME_BATCH


def test_levels_are_ordered_by_severity() -> None:
    assert [int(x) for x in Level] == [0, 1, 2, 3, 4]
    assert Level.NORMAL < Level.SOFT < Level.GRACEFUL < Level.AGGRESSIVE < Level.CIRCUIT_BREAK
