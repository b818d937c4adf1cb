"""Circuit breakers around the pipeline's dependencies: Iceberg commits, the state store, Kafka produce.

State machine (``CircuitBreaker``):

* CLOSED: calls pass. ``failure_threshold`` consecutive counted failures open the breaker; a
  success resets the count.
* OPEN: calls are refused at once with ``CircuitOpenError`` (carrying ``retry_after``), so a dead
  catalog is not hammered and the pipeline knows how long to wait. After ``reset_timeout_s`` the
  breaker turns HALF_OPEN by itself (decided when next asked; no timer thread).
* HALF_OPEN: up to ``half_open_max_calls`` probe calls go through. A failed probe opens the
  breaker again for a full ``reset_timeout_s``; once ``half_open_max_calls`` probes have succeeded
  it closes. Further callers are refused while the probes are in flight.

Only exceptions in ``failure_types`` count as failures; those in ``ignore`` pass through as answers
from a working dependency (a ``StaleWriterError`` means the catalog is fine and another writer won).
Either way the original exception propagates unchanged: callers keep handling what they handled.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ParamSpec, TypeVar

import structlog

from k2.config.resilience import BreakerSettings
from k2.resilience.errors import CircuitOpenError
from k2.resilience.metrics import BREAKER_STATE

__all__ = ["BreakerBoard", "BreakerState", "BreakerStatus", "CircuitBreaker"]

log = structlog.get_logger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


class BreakerState(IntEnum):
    """The value is the ``k2_breaker_state`` gauge's."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass(frozen=True, slots=True)
class BreakerStatus:
    name: str
    state: str
    failures: int
    retry_after: float
    opened_total: int


class CircuitBreaker:
    """One dependency's breaker; thread-safe (the lock guards state, never the call itself)."""

    def __init__(
        self,
        name: str,
        failure_threshold: int = 3,
        reset_timeout_s: float = 5.0,
        half_open_max_calls: int = 1,
        clock: Callable[[], float] = time.monotonic,
        *,
        failure_types: tuple[type[BaseException], ...] = (Exception,),
        ignore: tuple[type[BaseException], ...] = (),
    ) -> None:
        if failure_threshold < 1 or half_open_max_calls < 1 or reset_timeout_s <= 0:
            raise ValueError("failure_threshold and half_open_max_calls must be >= 1, reset_timeout_s > 0")
        self.name = name
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self.half_open_max_calls = half_open_max_calls
        self.failure_types = failure_types
        self.ignore = ignore
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probes = 0  # probes started in this half-open period
        self._successes = 0  # probes that succeeded in this half-open period
        self.opened_total = 0
        #: called with (previous, new) on every change, under the lock: keep listeners tiny (the demo records them)
        self.listeners: list[Callable[[BreakerState, BreakerState], None]] = []
        BREAKER_STATE.labels(name).set(0)

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._current()

    @property
    def failures(self) -> int:
        """Consecutive counted failures."""
        return self._failures

    @property
    def retry_after(self) -> float:
        """Seconds until a call may be attempted (0 when one may be attempted now)."""
        with self._lock:
            return self._retry_after()

    def call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``fn`` through the breaker.

        Raises:
            CircuitOpenError: the breaker is open (or its probes are taken); ``fn`` was not called.
            BaseException: whatever ``fn`` raised, unchanged, after counting it.
        """
        self._before()
        try:
            result = fn(*args, **kwargs)
        except self.ignore:
            self._on_success()
            raise
        except self.failure_types as exc:
            self._on_failure(exc)
            raise
        except BaseException:
            self._release()  # KeyboardInterrupt, a bug outside failure_types: no verdict on the dependency
            raise
        self._on_success()
        return result

    def reset(self) -> None:
        """Close by hand (an operator knows the dependency is back)."""
        with self._lock:
            self._failures = 0
            self._move(BreakerState.CLOSED)

    def status(self) -> BreakerStatus:
        with self._lock:
            state = self._current()
            return BreakerStatus(
                self.name,
                state.name.lower(),
                self._failures,
                round(self._retry_after(), 3),
                self.opened_total,
            )

    # -- transitions (lock held) ------------------------------------------------------------------
    def _current(self) -> BreakerState:
        if self._state == BreakerState.OPEN and self._clock() - self._opened_at >= self.reset_timeout_s:
            self._move(BreakerState.HALF_OPEN)
        return self._state

    def _retry_after(self) -> float:
        state = self._current()
        if state == BreakerState.OPEN:
            return max(0.0, self._opened_at + self.reset_timeout_s - self._clock())
        return 0.0

    def _move(self, state: BreakerState) -> None:
        if state == self._state:
            return
        previous, self._state = self._state, state
        self._probes = self._successes = 0
        if state == BreakerState.OPEN:
            self._opened_at = self._clock()
            self.opened_total += 1
        BREAKER_STATE.labels(self.name).set(int(state))
        for listener in self.listeners:
            listener(previous, state)
        emit = log.warning if state == BreakerState.OPEN else log.info
        emit(
            "circuit breaker state changed",
            breaker=self.name,
            previous=previous.name,
            state=state.name,
            failures=self._failures,
        )

    def _before(self) -> None:
        with self._lock:
            state = self._current()
            if state == BreakerState.OPEN:
                raise CircuitOpenError(self.name, self._retry_after())
            if state == BreakerState.HALF_OPEN:
                if self._probes >= self.half_open_max_calls:
                    raise CircuitOpenError(self.name, 0.0)
                self._probes += 1

    def _on_success(self) -> None:
        with self._lock:
            self._failures = 0
            if self._state == BreakerState.HALF_OPEN:
                self._successes += 1
                if self._successes >= self.half_open_max_calls:
                    self._move(BreakerState.CLOSED)

    def _on_failure(self, exc: BaseException) -> None:
        with self._lock:
            self._failures += 1
            log.warning("dependency call failed", breaker=self.name, failures=self._failures, error=str(exc))
            if self._state == BreakerState.HALF_OPEN:
                self._move(BreakerState.OPEN)  # a failed probe restarts the full wait
            elif self._state == BreakerState.CLOSED and self._failures >= self.failure_threshold:
                self._move(BreakerState.OPEN)

    def _release(self) -> None:
        with self._lock:
            if self._state == BreakerState.HALF_OPEN and self._probes > self._successes:
                self._probes -= 1


class BreakerBoard:
    """The named breakers of one process: created on first use, listed by ``status()`` for ``k2 status``.

    Args:
        settings: defaults for breakers created by ``get``.
        clock: shared by every breaker on the board.
    """

    def __init__(self, settings: BreakerSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()

    def get(self, name: str, **options: Any) -> CircuitBreaker:
        """The breaker called ``name``; created with the board's defaults (overridden by ``options``)."""
        with self._lock:
            breaker = self._breakers.get(name)
            if breaker is None:
                params: dict[str, Any] = {
                    "failure_threshold": self.settings.failure_threshold,
                    "reset_timeout_s": self.settings.reset_timeout_s,
                    "half_open_max_calls": self.settings.half_open_max_calls,
                    **options,
                }
                breaker = CircuitBreaker(name, clock=self._clock, **params)
                self._breakers[name] = breaker
            return breaker

    def add(self, breaker: CircuitBreaker) -> CircuitBreaker:
        with self._lock:
            self._breakers[breaker.name] = breaker
        return breaker

    def retry_after(self) -> float:
        """Longest wait any open breaker asks for (0 when every breaker would take a call now)."""
        return max((b.retry_after for b in list(self._breakers.values())), default=0.0)

    def retryable(self) -> tuple[type[BaseException], ...]:
        """``CircuitOpenError`` and every failure type of the board's breakers.

        The pipeline catches exactly these around a commit: they mean "a dependency is down, keep
        the buffer and retry"; anything else is a bug and stops the pipeline as before.
        """
        types: list[type[BaseException]] = [CircuitOpenError]
        for breaker in list(self._breakers.values()):
            types += [t for t in breaker.failure_types if t not in types]
        return tuple(types)

    def any_open(self) -> bool:
        return any(b.state == BreakerState.OPEN for b in list(self._breakers.values()))

    def status(self) -> list[BreakerStatus]:
        return [b.status() for _, b in sorted(self._breakers.items())]
