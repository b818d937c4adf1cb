"""The status file's live figures: the rate over a window, commit facts, quality counters."""

from __future__ import annotations

from k2.pipeline.vitals import RateMeter, commit_facts, quality_facts
from k2.state.metrics import state_metrics


def test_the_rate_is_over_the_window_not_since_start() -> None:
    now = [0.0]
    meter = RateMeter(window_s=10, clock=lambda: now[0])
    assert meter.rate(0) == 0.0
    now[0] = 5
    assert meter.rate(500) == 100.0
    now[0] = 30  # a quiet spell: the burst at 0-5 s has left the window
    assert meter.rate(500) == 0.0
    now[0] = 31  # measured from the last sample at least window_s old (5 s): 100 in 26 s
    assert meter.rate(600) == 100 / 26


def test_commit_facts_say_when_and_how_long() -> None:
    assert commit_facts(0, None, None) == {"count": 0, "last_s": None, "last_at": None}
    facts = commit_facts(3, 0.123456, 1_700_000_000.5)
    assert facts == {"count": 3, "last_s": 0.1235, "last_at": "2023-11-14T22:13:20.500+00:00"}


def test_quality_facts_read_this_process_registry() -> None:
    metrics = state_metrics()
    before = quality_facts(0, [])["gaps_recorded"]["trades"]
    metrics.gaps_recorded.labels("trades").inc(2)
    letter = {
        "at": "2026-01-01T00:00:00.000+00:00",
        "reason": "price <= 0",
        "source": "topic=t partition=0 offset=1",
    }
    facts = quality_facts(4, [letter])
    assert facts["gaps_recorded"]["trades"] == before + 2
    assert set(facts["gaps_open"]) == {"trades", "quotes"}
    assert facts["dead_letters"] == 4 and facts["latest_dead_letters"] == [letter]
