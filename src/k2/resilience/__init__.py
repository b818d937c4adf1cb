"""Resilience: degradation levels, deferral of low-priority symbols to a spill, circuit breakers.

Its settings live in ``k2.config.resilience``.
"""

from __future__ import annotations

from k2.resilience.breaker import BreakerBoard, BreakerState, CircuitBreaker
from k2.resilience.degradation import DegradationManager, LevelChange
from k2.resilience.errors import CircuitOpenError, SpillDeliveryError
from k2.resilience.flow import FlowControl
from k2.resilience.levels import Actions, Level, actions_for
from k2.resilience.shed import split
from k2.resilience.signals import LoadMeter, RssProbe, Signals, consumer_lag
from k2.resilience.spill import Spill
from k2.resilience.tiers import PriorityTiers

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
    "RssProbe",
    "Signals",
    "Spill",
    "SpillDeliveryError",
    "actions_for",
    "consumer_lag",
    "split",
]
