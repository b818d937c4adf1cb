"""The resilience section: sane defaults, hysteresis enforced, and nestable into K2's Settings."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from k2.config.resilience import Band, ExplicitTiers, ResilienceSettings, SignalThresholds


class _Root(BaseSettings):
    """How the lead nests the section into k2.config.Settings."""

    model_config = SettingsConfigDict(
        env_prefix="K2_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )
    resilience: ResilienceSettings = ResilienceSettings()


def test_defaults_have_hysteresis_everywhere() -> None:
    s = ResilienceSettings()
    for thresholds in (s.lag, s.batch_ratio, s.memory):
        for band in thresholds.bands():
            assert math.isinf(band.up) or band.down < band.up
    # lag and batch time can never stop consumption: stopping would not bring them down
    assert math.isinf(s.lag.circuit_break.up) and math.isinf(s.batch_ratio.circuit_break.up)
    assert s.memory.circuit_break.up < 1.0
    assert s.cooldown_s > 0


def test_band_without_hysteresis_is_refused() -> None:
    with pytest.raises(ValidationError, match="must be below up"):
        Band(up=10, down=10)
    with pytest.raises(ValidationError, match="must be below up"):
        Band(up=10, down=20)


def test_thresholds_must_rise_with_the_level() -> None:
    with pytest.raises(ValidationError, match="must rise"):
        SignalThresholds(soft=Band(up=5, down=1), graceful=Band(up=3, down=1), aggressive=Band(up=9, down=1))


def test_explicit_tiers_must_be_disjoint_and_fractions_fit() -> None:
    with pytest.raises(ValidationError, match="both tier1 and tier2"):
        ExplicitTiers(tier1=["BHP"], tier2=["BHP", "CBA"])
    with pytest.raises(ValidationError, match="must not exceed 1"):
        ResilienceSettings(tier1_fraction=0.7, tier2_fraction=0.5)
    with pytest.raises(ValidationError):
        ResilienceSettings(bogus=1)  # extra=forbid: a typo is an error, not a silent default


def test_nests_into_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K2_RESILIENCE__COOLDOWN_S", "3.5")
    monkeypatch.setenv("K2_RESILIENCE__LAG__SOFT__UP", "1000")
    monkeypatch.setenv("K2_RESILIENCE__LAG__SOFT__DOWN", "10")
    monkeypatch.setenv("K2_RESILIENCE__TIERS", '{"ASX": {"tier1": ["BHP", "CBA"]}}')
    s = _Root().resilience
    assert s.cooldown_s == 3.5
    assert s.lag.soft == Band(up=1000, down=10)
    assert s.lag.graceful == ResilienceSettings().lag.graceful  # untouched siblings keep defaults
    assert s.tiers["ASX"].tier1 == ["BHP", "CBA"] and s.tiers["ASX"].tier2 == []


def test_importing_the_settings_pulls_in_no_heavy_modules() -> None:
    """Every component imports k2.config: the whole of it must not import Kafka, Polars or k2.resilience."""
    code = (
        "import sys, k2.config as m; "
        "print(sorted(x for x in ('polars', 'confluent_kafka', 'psutil', 'k2.resilience', 'k2.hybrid') if x in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
