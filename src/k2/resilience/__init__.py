"""Resilience: degradation levels, deferral of low-priority symbols to a spill, circuit breakers.

Names are re-exported lazily: ``k2.config`` imports ``k2.resilience.settings``, and importing the
whole package there would pull Kafka and Polars into every ``k2 --help`` (and import k2.config back).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__all__ = [
    "Actions",
    "BreakerBoard",
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpenError",
    "DegradationManager",
    "FlowControl",
    "Level",
    "LevelChange",
    "LoadMeter",
    "PriorityTiers",
    "ResilienceSettings",
    "RssProbe",
    "Signals",
    "Spill",
    "SpillDeliveryError",
    "actions_for",
    "consumer_lag",
    "split",
]

_HOMES = {
    "Actions": "levels",
    "Level": "levels",
    "actions_for": "levels",
    "BreakerBoard": "breaker",
    "BreakerState": "breaker",
    "CircuitBreaker": "breaker",
    "CircuitOpenError": "errors",
    "SpillDeliveryError": "errors",
    "DegradationManager": "degradation",
    "LevelChange": "degradation",
    "FlowControl": "flow",
    "LoadMeter": "signals",
    "RssProbe": "signals",
    "Signals": "signals",
    "consumer_lag": "signals",
    "PriorityTiers": "tiers",
    "ResilienceSettings": "settings",
    "Spill": "spill",
    "split": "shed",
}

if TYPE_CHECKING:
    from k2.resilience.breaker import BreakerBoard, BreakerState, CircuitBreaker
    from k2.resilience.degradation import DegradationManager, LevelChange
    from k2.resilience.errors import CircuitOpenError, SpillDeliveryError
    from k2.resilience.flow import FlowControl
    from k2.resilience.levels import Actions, Level, actions_for
    from k2.resilience.settings import ResilienceSettings
    from k2.resilience.shed import split
    from k2.resilience.signals import LoadMeter, RssProbe, Signals, consumer_lag
    from k2.resilience.spill import Spill
    from k2.resilience.tiers import PriorityTiers


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'k2.resilience' has no attribute {name!r}")
    return getattr(import_module(f"k2.resilience.{home}"), name)
