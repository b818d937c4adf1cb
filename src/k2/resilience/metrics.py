"""The resilience layer's metrics, side by side, all on K2's one registry.

Backpressure you can watch: the level, why it changed, how many ticks were deferred, how many are
durable in the spill, how many came back, and the state of every breaker.
"""

from __future__ import annotations

from k2.observability.metrics import REGISTRY, Counter, Gauge

__all__ = [
    "BACKFILLED",
    "BREAKER_STATE",
    "DEFERRED",
    "LEVEL",
    "SIGNAL",
    "SPILLED",
    "TRANSITIONS",
]

LEVEL = Gauge(
    "k2_degradation_level",
    "Current degradation level: 0 normal, 1 soft, 2 graceful, 3 aggressive, 4 circuit break",
    registry=REGISTRY,
)
TRANSITIONS = Counter(
    "k2_degradation_transitions_total",
    "Degradation level changes",
    ["from", "to", "cause"],
    registry=REGISTRY,
)
SIGNAL = Gauge(
    "k2_degradation_signal",
    "Last value of each signal that drives the degradation level",
    ["signal"],
    registry=REGISTRY,
)
DEFERRED = Counter(
    "k2_deferred_total",
    "Ticks diverted to the spill topic instead of the tables",
    ["kind"],
    registry=REGISTRY,
)
SPILLED = Counter(
    "k2_spilled_total", "Deferred ticks acknowledged by the spill topic", ["kind"], registry=REGISTRY
)
BACKFILLED = Counter(
    "k2_backfilled_total", "Ticks read back from the spill topic into the tables", ["kind"], registry=REGISTRY
)
BREAKER_STATE = Gauge(
    "k2_breaker_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open", ["name"], registry=REGISTRY
)
