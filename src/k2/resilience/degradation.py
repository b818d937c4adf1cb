"""The degradation manager: measured signals in, at most one level change out.

Rules (``observe``), chosen so that levels cannot flap:

* **Up, immediately.** The *demanded* level is the highest level whose ``up`` threshold any signal
  reaches. If it is above the current level, the manager jumps straight to it (levels may be
  skipped: a memory spike must not wait for three observations).
* **Down, slowly and one level at a time.** The manager steps down one level only when every
  signal has stayed below the *current* level's ``down`` threshold for ``cooldown_s`` without a
  break, and it has been at the current level for at least ``cooldown_s``. A signal oscillating
  across a threshold therefore holds the level instead of toggling it; back at NORMAL only after
  each level in between has been calm for a full cool-down.

The manager is pure logic with an injectable clock. Its only side effects are the level gauge,
the transition counter and one log line per change, so what it decides is also what operators see.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import structlog

from k2.config.resilience import ResilienceSettings, SignalThresholds
from k2.resilience.levels import Actions, Level, actions_for
from k2.resilience.metrics import LEVEL, SIGNAL, TRANSITIONS
from k2.resilience.signals import Signals

__all__ = ["CALM", "MANUAL", "DegradationManager", "LevelChange"]

log = structlog.get_logger(__name__)

#: Cause label of a step down (every signal stayed below the level's down threshold).
CALM = "calm"
#: Cause label of an operator's ``force``.
MANUAL = "manual"

_MIB = 1024 * 1024
_ABOVE_NORMAL = (Level.SOFT, Level.GRACEFUL, Level.AGGRESSIVE, Level.CIRCUIT_BREAK)


@dataclass(frozen=True, slots=True)
class LevelChange:
    """One transition: the pipeline applies ``actions``; ``cause`` is the metric label."""

    previous: Level
    level: Level
    cause: str
    detail: str
    at: float
    actions: Actions


class DegradationManager:
    """Decides the degradation level from ``Signals``; see the module docstring for the rules.

    Args:
        settings: the ``resilience`` section.
        clock: monotonic seconds; tests pass a fake.
    """

    def __init__(self, settings: ResilienceSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._level = Level.NORMAL
        self._actions = {level: actions_for(level, settings) for level in Level}
        self._entered_at = clock()
        self._calm_since: float | None = None
        self.last_change: LevelChange | None = None
        LEVEL.set(0)

    @property
    def level(self) -> Level:
        return self._level

    @property
    def actions(self) -> Actions:
        """Actions of the current level."""
        return self._actions[self._level]

    def observe(self, signals: Signals) -> LevelChange | None:
        """Take one observation; return the level change it causes, if any."""
        now = self._clock()
        self._export(signals)
        if not self.settings.enabled:
            return None
        demanded, cause, reasons = self._demand(signals)
        if demanded > self._level:
            return self._change(demanded, cause, "; ".join(reasons), now, calm=False)
        if self._level == Level.NORMAL:
            return None
        blocking = self._blocking(signals, self._level)
        if blocking:
            self._calm_since = None
            return None
        if self._calm_since is None:
            self._calm_since = now
        cooled = self.settings.cooldown_s
        if now - self._calm_since >= cooled and now - self._entered_at >= cooled:
            target = Level(self._level - 1)
            detail = f"all signals below {self._level.name} down thresholds for {now - self._calm_since:.1f}s"
            return self._change(target, CALM, detail, now, calm=not self._blocking(signals, target))
        return None

    def force(self, level: Level, reason: str = "") -> LevelChange | None:
        """Set the level by hand (an operator, a demo); the normal rules apply from then on."""
        if level == self._level:
            return None
        return self._change(level, MANUAL, reason or "forced", self._clock(), calm=False)

    def status(self) -> dict[str, Any]:
        """The level and the last change, for ``k2 status`` and the API."""
        change = self.last_change
        return {
            "level": self._level.name,
            "since_s": round(self._clock() - self._entered_at, 3),
            "cause": change.cause if change else None,
            "detail": change.detail if change else None,
            "defer_tiers": sorted(self.actions.defer_tiers),
            "consume": self.actions.consume,
            "backfill": self.actions.backfill,
        }

    # -- rules ------------------------------------------------------------------------------------
    def _measures(self, signals: Signals) -> Iterator[tuple[str, float, SignalThresholds, str]]:
        """(cause label, comparable value, thresholds, value as a person reads it) per measured signal."""
        s = self.settings
        if signals.lag is not None:
            yield "lag", float(signals.lag), s.lag, f"{signals.lag}"
        if signals.batch_ratio is not None:
            yield "batch_ratio", signals.batch_ratio, s.batch_ratio, f"{signals.batch_ratio:.2f}"
        if signals.rss_bytes is not None:
            fraction = signals.rss_bytes / (s.memory_limit_mb * _MIB)
            yield "memory", fraction, s.memory, f"{signals.rss_bytes / _MIB:.0f}MiB={fraction:.2f}"

    def _demand(self, signals: Signals) -> tuple[Level, str, list[str]]:
        """The highest level any signal's up threshold reaches, the signal that reaches it, and why."""
        demanded, cause, reasons = Level.NORMAL, "", []
        for name, value, thresholds, shown in self._measures(signals):
            for level, band in reversed(list(zip(_ABOVE_NORMAL, thresholds.bands(), strict=True))):
                if value >= band.up:
                    reasons.append(f"{name} {shown} >= {band.up:g} ({level.name})")
                    if level > demanded:  # first signal wins a tie: lag, batch_ratio, memory
                        demanded, cause = level, name
                    break
        return demanded, cause, reasons

    def _blocking(self, signals: Signals, level: Level) -> list[str]:
        """Signals at or above ``level``'s down threshold: while any is, the level holds."""
        if level == Level.NORMAL:
            return []
        return [
            name
            for name, value, thresholds, _ in self._measures(signals)
            if value >= thresholds.bands()[level - 1].down
        ]

    def _change(self, level: Level, cause: str, detail: str, now: float, *, calm: bool) -> LevelChange:
        previous = self._level
        self._level = level
        self._entered_at = now
        self._calm_since = now if calm else None
        change = LevelChange(previous, level, cause, detail, now, self._actions[level])
        self.last_change = change
        LEVEL.set(int(level))
        TRANSITIONS.labels(previous.name.lower(), level.name.lower(), cause).inc()
        emit = log.warning if level > previous else log.info
        emit(
            "degradation level changed",
            previous=previous.name,
            level=level.name,
            cause=cause,
            detail=detail,
            defer_tiers=sorted(change.actions.defer_tiers),
            consume=change.actions.consume,
        )
        return change

    def _export(self, signals: Signals) -> None:
        if signals.lag is not None:
            SIGNAL.labels("lag").set(signals.lag)
        if signals.batch_ratio is not None:
            SIGNAL.labels("batch_ratio").set(signals.batch_ratio)
        if signals.rss_bytes is not None:
            SIGNAL.labels("rss_bytes").set(signals.rss_bytes)
