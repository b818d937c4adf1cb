from __future__ import annotations

import gc

from k2.pipeline.gcpolicy import tuned_gc


def test_raises_the_threshold_and_restores_it() -> None:
    before = gc.get_threshold()
    with tuned_gc(50_000):
        assert gc.get_threshold() == (50_000, before[1], before[2])
        assert gc.get_freeze_count() > 0  # start-up objects moved out of the collector's way
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_zero_leaves_the_collector_alone() -> None:
    before = gc.get_threshold()
    with tuned_gc(0):
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() == 0


def test_restores_after_an_error() -> None:
    before = gc.get_threshold()
    try:
        with tuned_gc(10_000):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert gc.get_threshold() == before
