"""Pacing: when each slice of a feed is due on the wall clock.

Two schedules: a fixed message rate (the simulator) and exchange time scaled by a speed factor
(the ASX replay, where ``speed=10`` plays ten exchange seconds per wall second). A stop request
cuts any wait short, so Ctrl-C never waits for a sleeping feed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

__all__ = ["Pacer", "replay_schedule"]


class Pacer:
    """Waits until offsets (seconds since ``start()``) on a monotonic clock."""

    def __init__(
        self, stop: threading.Event | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._stop = stop or threading.Event()
        self._clock = clock
        self._t0 = clock()

    def start(self) -> None:
        """Make now offset 0."""
        self._t0 = self._clock()

    @property
    def elapsed_s(self) -> float:
        return self._clock() - self._t0

    def wait_until(self, due_s: float) -> bool:
        """Sleep until ``due_s`` after the start; False if a stop was requested (at once or while waiting)."""
        delay = due_s - self.elapsed_s
        if delay > 0:
            return not self._stop.wait(delay)
        return not self._stop.is_set()


def replay_schedule(
    times_us: np.ndarray,
    *,
    speed: float | None,
    max_batch: int = 20_000,
    tick_s: float = 0.05,
    max_idle_s: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cut points and due times of a replay in exchange-time order.

    Messages whose wall-clock due times fall in the same ``tick_s`` window go out together, at most
    ``max_batch`` at a time. ``speed=None`` means as fast as possible (every slice due at 0).
    ``max_idle_s`` caps any quiet stretch on the wall clock (nights, weekends) to that many seconds.

    Returns:
        ``starts`` (index of each slice's first message, increasing, starting at 0) and ``due_s``
        (each slice's wall-clock offset).
    """
    n = len(times_us)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    if speed is None:
        starts = np.arange(0, n, max_batch, dtype=np.int64)
        return starts, np.zeros(len(starts))
    steps = np.diff(times_us.astype(np.int64)) / 1e6 / speed
    if max_idle_s is not None:
        steps = np.minimum(steps, max_idle_s)
    offsets = np.concatenate([[0.0], np.cumsum(steps)])
    window = np.floor(offsets / tick_s).astype(np.int64)
    first = np.concatenate([[0], np.flatnonzero(np.diff(window)) + 1])
    ends = np.append(first[1:], n)
    big = (ends - first) > max_batch
    if big.any():
        extra = [np.arange(a + max_batch, b, max_batch) for a, b in zip(first[big], ends[big], strict=True)]
        first = np.sort(np.concatenate([first, *extra]))
    return first.astype(np.int64), offsets[first]
