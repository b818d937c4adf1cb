"""Level transitions: immediate up, slow and stepwise down, hysteresis, cool-down, no flapping."""

from __future__ import annotations

from itertools import pairwise

import pytest
from structlog.testing import capture_logs

from k2.config.resilience import Band, BatchRatioThresholds, LagThresholds, ResilienceSettings
from k2.observability.metrics import sample
from k2.resilience.degradation import CALM, MANUAL, DegradationManager
from k2.resilience.levels import Level, actions_for
from k2.resilience.signals import Signals
from tests.unit.resilience.conftest import FakeClock

MIB = 1024 * 1024
# memory_limit 1000 MiB: the default memory bands are soft 600/500, graceful 700/600,
# aggressive 800/700, circuit_break 900/750 MiB
S = ResilienceSettings(
    cooldown_s=10.0,
    memory_limit_mb=1000,
    lag=LagThresholds(
        soft=Band(up=100, down=50), graceful=Band(up=1000, down=500), aggressive=Band(up=10_000, down=5000)
    ),
    batch_ratio=BatchRatioThresholds(
        soft=Band(up=0.6, down=0.4), graceful=Band(up=0.8, down=0.6), aggressive=Band(up=0.95, down=0.8)
    ),
)


def lag(n: int) -> Signals:
    return Signals(lag=n)


def mem(mib: int) -> Signals:
    return Signals(rss_bytes=mib * MIB)


@pytest.fixture
def manager(clock: FakeClock) -> DegradationManager:
    return DegradationManager(S, clock)


def test_starts_normal_and_quiet_signals_change_nothing(
    manager: DegradationManager, clock: FakeClock
) -> None:
    for _ in range(5):
        clock.advance(1)
        assert manager.observe(Signals(lag=0, batch_ratio=0.1, rss_bytes=100 * MIB)) is None
    assert manager.level == Level.NORMAL
    assert manager.actions == actions_for(Level.NORMAL, S)


@pytest.mark.parametrize(
    ("signals", "level", "cause"),
    [
        (lag(100), Level.SOFT, "lag"),
        (lag(1000), Level.GRACEFUL, "lag"),
        (lag(10_000), Level.AGGRESSIVE, "lag"),
        (Signals(batch_ratio=0.6), Level.SOFT, "batch_ratio"),
        (Signals(batch_ratio=0.85), Level.GRACEFUL, "batch_ratio"),
        (Signals(batch_ratio=1.0), Level.AGGRESSIVE, "batch_ratio"),
        (mem(600), Level.SOFT, "memory"),
        (mem(700), Level.GRACEFUL, "memory"),
        (mem(800), Level.AGGRESSIVE, "memory"),
        (mem(900), Level.CIRCUIT_BREAK, "memory"),
    ],
)
def test_each_signal_raises_to_its_level_at_once(
    manager: DegradationManager, signals: Signals, level: Level, cause: str
) -> None:
    change = manager.observe(signals)
    assert change is not None
    assert (change.previous, change.level, change.cause) == (Level.NORMAL, level, cause)
    assert change.actions == actions_for(level, S) == manager.actions


def test_lag_alone_never_stops_consumption(manager: DegradationManager) -> None:
    change = manager.observe(lag(10**12))
    assert change is not None and change.level == Level.AGGRESSIVE
    assert manager.actions.consume


def test_the_worst_signal_decides_and_is_the_cause(manager: DegradationManager) -> None:
    change = manager.observe(Signals(lag=150, batch_ratio=0.85, rss_bytes=100 * MIB))
    assert change is not None and change.level == Level.GRACEFUL and change.cause == "batch_ratio"
    assert "lag 150 >= 100 (SOFT)" in change.detail and "batch_ratio 0.85 >= 0.8 (GRACEFUL)" in change.detail


def test_every_step_up_and_every_step_down(manager: DegradationManager, clock: FakeClock) -> None:
    seen = []
    for signals in (lag(100), lag(1000), lag(10_000), mem(950)):
        change = manager.observe(signals)
        assert change is not None
        seen.append((change.previous, change.level))
    times = [clock.now]
    for _ in range(60):  # calm: one level per cool-down, never two at once
        clock.advance(1)
        change = manager.observe(Signals(lag=0, rss_bytes=100 * MIB))
        if change is not None:
            assert change.cause == CALM
            seen.append((change.previous, change.level))
            times.append(change.at)
    assert all(b - a >= S.cooldown_s for a, b in pairwise(times))
    L = Level
    assert seen == [
        (L.NORMAL, L.SOFT), (L.SOFT, L.GRACEFUL), (L.GRACEFUL, L.AGGRESSIVE), (L.AGGRESSIVE, L.CIRCUIT_BREAK),
        (L.CIRCUIT_BREAK, L.AGGRESSIVE), (L.AGGRESSIVE, L.GRACEFUL), (L.GRACEFUL, L.SOFT), (L.SOFT, L.NORMAL),
    ]  # fmt: skip
    assert manager.level == Level.NORMAL


def test_up_may_skip_levels(manager: DegradationManager) -> None:
    change = manager.observe(mem(950))
    assert change is not None and (change.previous, change.level) == (Level.NORMAL, Level.CIRCUIT_BREAK)


def test_no_step_down_before_the_cooldown(manager: DegradationManager, clock: FakeClock) -> None:
    manager.observe(lag(1000))
    clock.advance(9.9)
    assert manager.observe(lag(0)) is None  # calm, but only since now
    clock.advance(9.9)
    assert manager.observe(lag(0)) is None  # calm for 9.9 s < 10 s
    clock.advance(0.1)
    change = manager.observe(lag(0))
    assert change is not None and (change.previous, change.level) == (Level.GRACEFUL, Level.SOFT)


def test_hysteresis_band_holds_the_level(manager: DegradationManager, clock: FakeClock) -> None:
    """Between down (500) and up (1000) of GRACEFUL nothing moves, for as long as it lasts."""
    manager.observe(lag(1000))
    for _ in range(100):
        clock.advance(1)
        assert manager.observe(lag(700)) is None
    assert manager.level == Level.GRACEFUL
    clock.advance(1)
    assert manager.observe(lag(499)) is None  # below down: calm starts, the cool-down runs
    clock.advance(10)
    change = manager.observe(lag(499))
    assert change is not None and change.level == Level.SOFT  # 499 >= SOFT's down (50): holds at SOFT
    for _ in range(60):
        clock.advance(1)
        assert manager.observe(lag(499)) is None
    assert manager.level == Level.SOFT


def test_calm_must_be_unbroken(manager: DegradationManager, clock: FakeClock) -> None:
    manager.observe(lag(100))
    for _ in range(5):
        clock.advance(9)
        assert manager.observe(lag(0)) is None
        clock.advance(1)
        assert manager.observe(lag(60)) is None  # one sample above SOFT's down restarts the calm
    assert manager.level == Level.SOFT


def test_oscillating_signal_does_not_flap(manager: DegradationManager, clock: FakeClock) -> None:
    """A signal swinging across a threshold every second for ten minutes makes one transition."""
    changes = []
    for i in range(600):
        clock.advance(1)
        change = manager.observe(lag(120 if i % 2 == 0 else 20))
        if change is not None:
            changes.append(change)
    assert [(c.previous, c.level) for c in changes] == [(Level.NORMAL, Level.SOFT)]


def test_bursts_spaced_beyond_the_cooldown_change_the_level_at_most_twice_per_burst(
    manager: DegradationManager, clock: FakeClock
) -> None:
    """Load that returns just after each cool-down: the level moves at the cool-down's pace, no faster,
    and never falls all the way to NORMAL (which would take one calm cool-down per level)."""
    changes = []
    for _ in range(20):
        for value, seconds in ((1200, 1), (0, 12)):
            for _ in range(seconds):
                clock.advance(1)
                change = manager.observe(lag(value))
                if change is not None:
                    changes.append(change)
    assert len(changes) == 40
    assert all(c.level in (Level.SOFT, Level.GRACEFUL) for c in changes)
    downs = [c.at for c in changes if c.level < c.previous]
    assert all(b - a >= S.cooldown_s for a, b in pairwise(downs))


def test_unmeasured_signals_neither_raise_nor_hold(manager: DegradationManager, clock: FakeClock) -> None:
    manager.observe(lag(1000))
    clock.advance(1)
    assert manager.observe(Signals()) is None
    clock.advance(10)
    change = manager.observe(Signals())
    assert change is not None and change.level == Level.SOFT


def test_disabled_stays_normal(clock: FakeClock) -> None:
    manager = DegradationManager(S.model_copy(update={"enabled": False}), clock)
    assert manager.observe(mem(999)) is None
    assert manager.level == Level.NORMAL


def test_force_then_rules_apply(manager: DegradationManager, clock: FakeClock) -> None:
    change = manager.force(Level.AGGRESSIVE, "demo")
    assert change is not None and change.cause == MANUAL and manager.level == Level.AGGRESSIVE
    assert manager.force(Level.AGGRESSIVE) is None
    clock.advance(1)
    assert manager.observe(lag(0)) is None
    clock.advance(10)
    change = manager.observe(lag(0))
    assert change is not None and change.level == Level.GRACEFUL


def test_metrics_and_a_log_line_per_change(manager: DegradationManager, clock: FakeClock) -> None:
    before = sample("k2_degradation_transitions_total", {"from": "normal", "to": "graceful", "cause": "lag"})
    with capture_logs() as logs:
        manager.observe(lag(5000))
        clock.advance(1)
        manager.observe(lag(5000))  # no change, no line
    assert sample("k2_degradation_level") == 2
    assert sample("k2_degradation_signal", {"signal": "lag"}) == 5000
    after = sample("k2_degradation_transitions_total", {"from": "normal", "to": "graceful", "cause": "lag"})
    assert after == before + 1
    lines = [e for e in logs if e["event"] == "degradation level changed"]
    assert len(lines) == 1
    assert lines[0]["previous"] == "NORMAL" and lines[0]["level"] == "GRACEFUL" and lines[0]["cause"] == "lag"
    assert lines[0]["log_level"] == "warning"
    assert lines[0]["defer_tiers"] == [3]


def test_status(manager: DegradationManager, clock: FakeClock) -> None:
    manager.observe(mem(950))
    clock.advance(2.5)
    status = manager.status()
    assert status["level"] == "CIRCUIT_BREAK" and status["cause"] == "memory"
    assert status["since_s"] == 2.5 and status["consume"] is False
