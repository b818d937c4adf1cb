"""A frozen checkpoint whose commit failed is retried whole: done steps skipped, breakers consulted."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from k2.config.resilience import BreakerSettings
from k2.lake.errors import LakeError
from k2.pipeline.checkpoint import Checkpoint
from k2.pipeline.checks import BatchChecks
from k2.resilience.breaker import BreakerBoard
from k2.resilience.errors import CircuitOpenError, SpillDeliveryError
from k2.state import CheckResult
from k2.types import Offsets, TopicPartition
from tests.unit.resilience.conftest import FakeClock


class FakeSink:
    """Stands in for TableSink: counts appends and fails while told to."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.topics = {"t"}
        self.rows = 0
        self.appends = 0
        self.fail = False
        self._dirty = False

    def add(self) -> None:
        self._dirty = True

    def freeze(self, **_: Any) -> object | None:
        if not self._dirty:
            return None
        self._dirty = False
        return object()

    def commit_batch(self, batch: object) -> int:
        if self.fail:
            raise LakeError(f"{self.name}: disk on fire")
        self.appends += 1
        return self.appends

    def clear(self) -> None:
        self._dirty = False


class FakeChecks(BatchChecks):
    def __init__(self) -> None:
        self.commits = 0

    def assign(self, partitions: list[TopicPartition]) -> Offsets:
        return {}

    def process(self, kind: str, topic: str, frame: Any, markers: Any = ()) -> CheckResult:
        raise NotImplementedError

    def prepare(self, end: Offsets) -> Callable[[], None]:
        def commit() -> None:
            self.commits += 1

        return commit

    def revoke(self, partitions: list[TopicPartition]) -> None:
        return None


def _checkpoint(clock: FakeClock, unspilled: list[int]) -> tuple[Checkpoint, FakeSink, FakeSink, FakeChecks]:
    board = BreakerBoard(BreakerSettings(failure_threshold=2, reset_timeout_s=5), clock)
    board.get("iceberg", failure_types=(LakeError,))
    board.get("kafka", failure_types=(SpillDeliveryError,))
    gaps, trades, checks = FakeSink("gaps"), FakeSink("trades"), FakeChecks()
    cp = Checkpoint(
        gap_sink=gaps,  # type: ignore[arg-type]
        tick_sinks=[trades],  # type: ignore[list-item]
        checks=checks,
        flush_dead_letters=lambda: 0,
        commit_group_offsets=lambda end: None,
        max_rows=10,
        max_age_s=1,
        flush_spill=lambda: unspilled[0],
        breakers=board,
    )
    return cp, gaps, trades, checks


def test_retry_skips_the_steps_that_went_through(clock: FakeClock) -> None:
    cp, gaps, trades, checks = _checkpoint(clock, [0])
    gaps.add()
    trades.add()
    cp.record_read({("t", 0): 10})
    frozen = cp.freeze()
    assert frozen is not None
    gaps.fail = True  # the gap table follows the ticks: the trades went through
    with pytest.raises(LakeError):
        frozen.commit()
    assert trades.appends == 1 and checks.commits == 0  # the state never runs ahead of the tables
    gaps.fail = False
    frozen.commit()
    assert gaps.appends == 1 and trades.appends == 1 and checks.commits == 1 and cp.commits == 1


def test_an_open_breaker_refuses_without_calling_and_lets_a_probe_through_later(clock: FakeClock) -> None:
    cp, _gaps, trades, checks = _checkpoint(clock, [0])
    trades.add()
    cp.record_read({("t", 0): 10})
    frozen = cp.freeze()
    assert frozen is not None
    trades.fail = True
    for _ in range(2):
        with pytest.raises(LakeError):
            frozen.commit()
    with pytest.raises(CircuitOpenError):
        frozen.commit()  # open: the table is not hammered
    assert cp.breakers is not None and cp.breakers.retry_after() == pytest.approx(5)
    trades.fail = False
    clock.advance(5)
    frozen.commit()  # the half-open probe succeeds
    assert trades.appends == 1 and checks.commits == 1
    assert cp.breakers.get("iceberg").status().state == "closed"


def test_an_undurable_spill_commits_nothing(clock: FakeClock) -> None:
    unspilled = [3]
    cp, gaps, trades, checks = _checkpoint(clock, unspilled)
    gaps.add()
    trades.add()
    cp.record_read({("t", 0): 10})
    frozen = cp.freeze()
    assert frozen is not None
    with pytest.raises(SpillDeliveryError):
        frozen.commit()
    assert gaps.appends == trades.appends == checks.commits == 0
    unspilled[0] = 0
    frozen.commit()
    assert gaps.appends == trades.appends == checks.commits == 1
