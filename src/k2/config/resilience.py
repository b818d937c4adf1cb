"""The ``resilience`` section of K2's settings: thresholds, cool-down, tiers and breakers.

Every threshold is a *band*: a level is entered when a signal reaches ``up`` and is left only once
every signal has stayed below that level's ``down`` for the cool-down. The gap between the two is
the hysteresis that keeps a signal hovering around one value from flipping the level back and
forth. ``up = inf`` means "this signal never drives that level": consumer lag and batch time are
not allowed to stop consumption, because stopping cannot make either of them fall.

The section is nested into ``k2.config.Settings`` as ``resilience`` (environment
``K2_RESILIENCE__…``, TOML ``[resilience]``).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "Band",
    "BatchRatioThresholds",
    "BreakerSettings",
    "ExplicitTiers",
    "LagThresholds",
    "MemoryThresholds",
    "ResilienceSettings",
    "SignalThresholds",
]

INF = math.inf


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Band(_Model):
    """Enter a level at ``up`` or above; leave it only below ``down``."""

    up: float = Field(ge=0)
    down: float = Field(ge=0)

    @model_validator(mode="after")
    def _hysteresis(self) -> Band:
        if math.isinf(self.up):
            return self
        if not self.down < self.up:
            raise ValueError(f"down ({self.down}) must be below up ({self.up}), or levels would flap")
        return self


class SignalThresholds(_Model):
    """One signal's band for each level above NORMAL; ``up`` must not fall as the level rises."""

    soft: Band
    graceful: Band
    aggressive: Band
    circuit_break: Band = Band(up=INF, down=INF)

    @model_validator(mode="after")
    def _ordered(self) -> SignalThresholds:
        ups = [b.up for b in self.bands()]
        if ups != sorted(ups):
            raise ValueError(f"up thresholds must rise with the level (soft → circuit_break), got {ups}")
        return self

    def bands(self) -> tuple[Band, Band, Band, Band]:
        """Bands of SOFT, GRACEFUL, AGGRESSIVE and CIRCUIT_BREAK, in that order."""
        return (self.soft, self.graceful, self.aggressive, self.circuit_break)


class LagThresholds(SignalThresholds):
    """Consumer lag of the source topics, in messages; never stops consumption."""

    soft: Band = Band(up=250_000, down=100_000)
    graceful: Band = Band(up=1_000_000, down=400_000)
    aggressive: Band = Band(up=4_000_000, down=1_500_000)


class BatchRatioThresholds(SignalThresholds):
    """Busy share of wall time; by default it only reaches SOFT, and never stops consumption.

    A pipeline draining a backlog at full speed reads ~1 while it is catching up perfectly well,
    so by default a busy ratio alone only pauses the back-fill and optional work (SOFT); deferring
    symbols is left to the lag, which says whether freshness is really at risk. Set ``graceful`` /
    ``aggressive`` to let the ratio defer too.
    """

    soft: Band = Band(up=0.6, down=0.4)
    graceful: Band = Band(up=INF, down=INF)
    aggressive: Band = Band(up=INF, down=INF)


class MemoryThresholds(SignalThresholds):
    """Process RSS as a fraction of ``memory_limit_mb``: the one signal that may stop consumption."""

    soft: Band = Band(up=0.6, down=0.5)
    graceful: Band = Band(up=0.7, down=0.6)
    aggressive: Band = Band(up=0.8, down=0.7)
    circuit_break: Band = Band(up=0.9, down=0.75)


class ExplicitTiers(_Model):
    """Hand-picked priorities of one exchange; its symbols not listed here are tier 3."""

    tier1: list[str] = Field(default_factory=list)
    tier2: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _disjoint(self) -> ExplicitTiers:
        both = set(self.tier1) & set(self.tier2)
        if both:
            raise ValueError(f"symbols listed in both tier1 and tier2: {sorted(both)}")
        return self


class BreakerSettings(_Model):
    """Defaults of the circuit breakers around Iceberg commits, the state store and Kafka produce."""

    failure_threshold: int = Field(default=3, ge=1, description="Consecutive failures that open a breaker.")
    reset_timeout_s: float = Field(default=5.0, gt=0, description="Open this long before a half-open probe.")
    half_open_max_calls: int = Field(default=1, ge=1, description="Successful probes needed to close again.")


class ResilienceSettings(_Model):
    """Degradation levels, load shedding (deferral to the spill topics) and circuit breakers."""

    enabled: bool = Field(default=True, description="False: the level stays NORMAL whatever the signals say.")
    cooldown_s: float = Field(
        default=10.0, ge=0, description="Minimum time at a level, and of calm signals, before stepping down."
    )
    lag: LagThresholds = Field(
        default=LagThresholds(), description="Consumer lag of the source topics, in messages."
    )
    batch_ratio: BatchRatioThresholds = Field(
        default=BatchRatioThresholds(),
        description="Share of wall time spent processing (not waiting in consume), over ratio_window_s.",
    )
    memory: MemoryThresholds = Field(
        default=MemoryThresholds(), description="Process RSS as a fraction of memory_limit_mb."
    )
    memory_limit_mb: int = Field(default=2048, ge=64, description="RSS budget of one pipeline process.")
    ratio_window_s: float = Field(default=5.0, gt=0, description="Window of the batch_ratio signal.")
    aggressive_batch_multiplier: int = Field(
        default=4, ge=1, le=100, description="consume() batch size multiplier at AGGRESSIVE and above."
    )
    aggressive_commit_multiplier: float = Field(
        default=4.0, ge=1, le=100, description="Commit interval multiplier at AGGRESSIVE and above."
    )
    tier1_fraction: float = Field(
        default=0.1, gt=0, le=1, description="Most active share of symbols: tier 1."
    )
    tier2_fraction: float = Field(default=0.3, ge=0, le=1, description="Next share of symbols: tier 2.")
    tiers: dict[str, ExplicitTiers] = Field(
        default_factory=dict, description="Exchange -> explicit tier lists; replaces volume ranking there."
    )
    unknown_tier: Literal[1, 2, 3] = Field(
        default=3, description="Tier of a symbol with no volume observed yet."
    )
    volume_half_life_s: float = Field(
        default=600.0, gt=0, description="Half-life of the per-symbol volume counts."
    )
    tiers_refresh_s: float = Field(
        default=30.0, gt=0, description="Recompute volume tiers at most this often."
    )
    breakers: BreakerSettings = BreakerSettings()

    @model_validator(mode="after")
    def _fractions(self) -> ResilienceSettings:
        if self.tier1_fraction + self.tier2_fraction > 1:
            raise ValueError("tier1_fraction + tier2_fraction must not exceed 1")
        return self
