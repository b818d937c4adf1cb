"""A hand-driven clock: every time-based rule (cool-down, windows, reset timeouts) is tested exactly."""

from __future__ import annotations

import pytest


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
