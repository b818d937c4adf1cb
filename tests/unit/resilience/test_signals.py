"""The probes: busy ratio over a window, consumer lag from cached watermarks, process RSS."""

from __future__ import annotations

from dataclasses import dataclass

import psutil
import pytest

from k2.resilience.signals import LoadMeter, RssProbe, consumer_lag
from tests.unit.resilience.conftest import FakeClock


def test_ratio_is_busy_share_of_the_window(clock: FakeClock) -> None:
    meter = LoadMeter(window_s=10, clock=clock)
    assert meter.ratio() == 0.0
    for _ in range(10):  # 0.5 s of work per second
        clock.advance(1)
        meter.add_busy(0.5)
    assert meter.ratio() == pytest.approx(0.5)
    for _ in range(10):  # saturated
        clock.advance(1)
        meter.add_busy(1.0)
    assert meter.ratio() == pytest.approx(1.0)


def test_ratio_forgets_work_older_than_the_window(clock: FakeClock) -> None:
    meter = LoadMeter(window_s=5, clock=clock)
    clock.advance(10)
    meter.add_busy(5.0)
    clock.advance(2.5)
    meter.add_busy(0.5)
    assert meter.ratio() == pytest.approx(1.0)  # capped: 5.5 s of work reported within 5 s
    clock.advance(4.9)
    assert meter.ratio() == pytest.approx(0.1)  # the 5 s span left the window
    clock.advance(1)
    assert meter.ratio() == 0.0


def test_ratio_early_in_life_uses_the_time_since_start(clock: FakeClock) -> None:
    meter = LoadMeter(window_s=60, clock=clock)
    clock.advance(2)
    meter.add_busy(1.0)
    assert meter.ratio() == pytest.approx(0.5)


@dataclass
class _TP:
    topic: str
    partition: int
    offset: int = -1001


class _FakeConsumer:
    def __init__(self, positions: dict[tuple[str, int], int], highs: dict[tuple[str, int], int]) -> None:
        self.positions = positions
        self.highs = highs
        self.cached: list[bool] = []

    def position(self, partitions: list[_TP]) -> list[_TP]:
        return [
            _TP(p.topic, p.partition, self.positions.get((p.topic, p.partition), -1001)) for p in partitions
        ]

    def get_watermark_offsets(self, partition: _TP, timeout: float | None = None, cached: bool = False):  # type: ignore[no-untyped-def]
        self.cached.append(cached)
        high = self.highs.get((partition.topic, partition.partition), -1001)
        return (0 if high >= 0 else -1001, high)


def test_consumer_lag_sums_high_minus_position_without_broker_calls() -> None:
    consumer = _FakeConsumer(
        positions={("t", 0): 10, ("t", 1): 50, ("t", 2): -1001, ("t", 3): 7},
        highs={("t", 0): 110, ("t", 1): 50, ("t", 2): 999, ("t", 3): -1001},
    )
    parts = [_TP("t", p) for p in range(4)]
    # p0: 100 behind; p1: caught up; p2: no position yet; p3: no watermark cached yet
    assert consumer_lag(consumer, parts) == 100
    assert consumer.cached and all(consumer.cached)  # cached watermarks only: safe every iteration
    assert consumer_lag(consumer, []) == 0


def test_rss_probe_reads_this_process() -> None:
    probe = RssProbe()
    rss = probe()
    expected = psutil.Process().memory_info().rss
    assert rss > 10 * 1024 * 1024
    assert abs(rss - expected) < 0.2 * expected
