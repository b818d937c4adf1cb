"""The breaker state machine, and the pipeline's contract on an open breaker: nothing lost, nothing twice."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from k2.config.resilience import BreakerSettings
from k2.errors import K2Error
from k2.observability.metrics import sample
from k2.resilience.breaker import BreakerBoard, BreakerState, CircuitBreaker
from k2.resilience.errors import CircuitOpenError
from tests.unit.resilience.conftest import FakeClock


class Down(Exception):
    pass


class Fenced(Exception):
    pass


def fail() -> None:
    raise Down("catalog unreachable")


def ok() -> str:
    return "ok"


def make(clock: FakeClock, name: str = "iceberg", **kw: object) -> CircuitBreaker:
    params: dict[str, object] = {"failure_threshold": 3, "reset_timeout_s": 5.0, "half_open_max_calls": 1}
    params.update(kw)
    return CircuitBreaker(name, clock=clock, **params)  # type: ignore[arg-type]


def trip(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.failure_threshold):
        with pytest.raises(Down):
            breaker.call(fail)


def test_closed_passes_calls_and_results(clock: FakeClock) -> None:
    b = make(clock)
    assert b.call(ok) == "ok"
    assert b.call(lambda x, y=1: x + y, 2, y=3) == 5
    assert b.state == BreakerState.CLOSED and b.retry_after == 0


def test_opens_after_consecutive_failures_only(clock: FakeClock) -> None:
    b = make(clock)
    for _ in range(2):
        with pytest.raises(Down):  # the original error propagates unchanged
            b.call(fail)
    b.call(ok)  # a success resets the count
    assert b.failures == 0
    for _ in range(2):
        with pytest.raises(Down):
            b.call(fail)
    assert b.state == BreakerState.CLOSED
    with pytest.raises(Down):
        b.call(fail)
    assert b.state == BreakerState.OPEN


def test_open_refuses_without_calling_and_says_when_to_retry(clock: FakeClock) -> None:
    b = make(clock)
    trip(b)
    calls = []
    clock.advance(2)
    with pytest.raises(CircuitOpenError) as info:
        b.call(lambda: calls.append(1))
    assert calls == []
    assert isinstance(info.value, K2Error)
    assert info.value.name == "iceberg" and info.value.retry_after == pytest.approx(3.0)
    assert b.retry_after == pytest.approx(3.0)


def test_half_open_after_the_timeout_and_a_good_probe_closes(clock: FakeClock) -> None:
    b = make(clock)
    trip(b)
    clock.advance(5)
    assert b.state == BreakerState.HALF_OPEN and b.retry_after == 0
    assert b.call(ok) == "ok"
    assert b.state == BreakerState.CLOSED and b.failures == 0


def test_a_failed_probe_reopens_for_a_full_timeout(clock: FakeClock) -> None:
    b = make(clock)
    trip(b)
    clock.advance(6)
    with pytest.raises(Down):
        b.call(fail)
    assert b.state == BreakerState.OPEN
    assert b.retry_after == pytest.approx(5.0)  # from the probe's failure, not the first opening
    clock.advance(4.9)
    with pytest.raises(CircuitOpenError):
        b.call(ok)
    clock.advance(0.1)
    assert b.call(ok) == "ok" and b.state == BreakerState.CLOSED
    assert b.opened_total == 2


def test_half_open_needs_enough_good_probes_and_limits_them(clock: FakeClock) -> None:
    b = make(clock, half_open_max_calls=2)
    trip(b)
    clock.advance(5)
    seen: list[str] = []

    def probe_while_another_probe_runs() -> str:
        # second probe slot is free: a concurrent caller may probe too
        seen.append(b.call(ok))
        # both slots taken now: a third caller is refused until a verdict
        with pytest.raises(CircuitOpenError) as info:
            b.call(ok)
        assert info.value.retry_after == 0
        return "first"

    assert b.call(probe_while_another_probe_runs) == "first"
    assert seen == ["ok"]
    assert b.state == BreakerState.CLOSED  # two good probes


def test_half_open_with_one_success_of_two_stays_half_open(clock: FakeClock) -> None:
    b = make(clock, half_open_max_calls=2)
    trip(b)
    clock.advance(5)
    b.call(ok)
    assert b.state == BreakerState.HALF_OPEN
    b.call(ok)
    assert b.state == BreakerState.CLOSED


def test_ignored_errors_propagate_but_do_not_count(clock: FakeClock) -> None:
    b = make(clock, ignore=(Fenced,))
    for _ in range(10):
        with pytest.raises(Fenced):
            b.call(lambda: (_ for _ in ()).throw(Fenced("another writer won")))
    assert b.state == BreakerState.CLOSED and b.failures == 0


def test_only_failure_types_count_and_interrupts_free_the_probe(clock: FakeClock) -> None:
    b = make(clock, failure_types=(Down,))
    for _ in range(5):
        with pytest.raises(ValueError):
            b.call(lambda: int("x"))  # a bug, not an outage
    assert b.state == BreakerState.CLOSED
    trip(b)
    clock.advance(5)

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        b.call(interrupted)
    assert b.state == BreakerState.HALF_OPEN
    assert b.call(ok) == "ok"  # the probe slot was released, not leaked
    assert b.state == BreakerState.CLOSED


def test_state_gauge_and_log_lines(clock: FakeClock) -> None:
    b = make(clock, name="state-store")
    assert sample("k2_breaker_state", {"name": "state-store"}) == 0
    with capture_logs() as logs:
        trip(b)
    assert sample("k2_breaker_state", {"name": "state-store"}) == 2
    assert any(e["event"] == "circuit breaker state changed" and e["state"] == "OPEN" for e in logs)
    clock.advance(5)
    assert b.state == BreakerState.HALF_OPEN
    assert sample("k2_breaker_state", {"name": "state-store"}) == 1
    b.call(ok)
    assert sample("k2_breaker_state", {"name": "state-store"}) == 0


def test_manual_reset(clock: FakeClock) -> None:
    b = make(clock)
    trip(b)
    b.reset()
    assert b.state == BreakerState.CLOSED and b.call(ok) == "ok"


def test_board_creates_named_breakers_and_reports(clock: FakeClock) -> None:
    board = BreakerBoard(BreakerSettings(failure_threshold=1, reset_timeout_s=8), clock)
    iceberg = board.get("iceberg")
    assert board.get("iceberg") is iceberg
    kafka = board.get("kafka", failure_threshold=2)
    assert (iceberg.failure_threshold, kafka.failure_threshold) == (1, 2)
    assert board.retry_after() == 0 and not board.any_open()
    with pytest.raises(Down):
        iceberg.call(fail)
    clock.advance(3)
    assert board.any_open() and board.retry_after() == pytest.approx(5.0)
    status = {s.name: s for s in board.status()}
    assert [s.name for s in board.status()] == ["iceberg", "kafka"]
    assert status["iceberg"].state == "open" and status["iceberg"].retry_after == pytest.approx(5.0)
    assert status["kafka"].state == "closed" and status["iceberg"].opened_total == 1


def test_board_retryable_names_what_a_commit_may_wait_out(clock: FakeClock) -> None:
    board = BreakerBoard(BreakerSettings(), clock)
    board.get("iceberg", failure_types=(Down, OSError), ignore=(Fenced,))
    board.get("state", failure_types=(OSError, TimeoutError))
    retryable = board.retryable()
    assert retryable == (CircuitOpenError, Down, OSError, TimeoutError)
    try:
        raise TimeoutError("redis")
    except retryable as exc:  # the pipeline's `except board.retryable()` catches dependency failures
        assert isinstance(exc, TimeoutError)
    assert not issubclass(ValueError, retryable)


class _Table:
    """An Iceberg table as the commit protocol sees it: rows and the offset its head covers."""

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.offset = 0
        self.down = False

    def commit(self, rows: list[int], start: int, end: int) -> None:
        if self.down:
            raise Down("catalog unreachable")
        assert start == self.offset, "compare-and-set on offsets"
        self.rows += rows
        self.offset = end


def test_open_breaker_contract_pause_keep_retry_resume(clock: FakeClock) -> None:
    """The loop the lead integrates, in miniature: an outage pauses consumption, keeps the buffer,
    retries after retry_after, and resumes; every offset lands exactly once."""
    table, breaker = _Table(), make(clock, failure_threshold=2, reset_timeout_s=5)
    source = iter(range(1000))
    buffer: list[int] = []
    paused, retry_at, pauses = False, 0.0, 0
    for step in range(300):
        clock.advance(0.5)
        table.down = 40 <= step < 90  # a 25 s outage
        if not paused:
            buffer += [next(source) for _ in range(3)]
        if step % 4 == 3 and clock.now >= retry_at:  # a commit is due
            try:
                breaker.call(table.commit, list(buffer), table.offset, table.offset + len(buffer))
            except (CircuitOpenError, Down):
                pauses += not paused
                paused, retry_at = True, clock.now + breaker.retry_after
            else:
                buffer.clear()
                paused = False
    assert pauses >= 1 and breaker.opened_total >= 1 and breaker.state == BreakerState.CLOSED
    assert table.rows == list(range(len(table.rows)))  # no gap, no duplicate, in order
    assert table.offset == len(table.rows) and not buffer
