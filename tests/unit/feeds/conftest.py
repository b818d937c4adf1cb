"""Fixtures of the feed tests: simulator runs shared by a module, and a reference consumer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl
import pytest

from k2.feeds.delivery import Delivery, RawMessage
from k2.feeds.faults import FaultConfig
from k2.feeds.market import MarketConfig, symbol_names
from k2.feeds.simulator import Simulator, SimulatorConfig

#: Every fault at a rate high enough to meet them all (and their interactions) in a few chunks.
FAULTS = FaultConfig(
    gap_rate=0.01,
    gap_max_len=3,
    dup_rate=0.01,
    reorder_rate=0.01,
    reorder_window=6,
    reset_rate=0.0005,
    late_fill_fraction=0.5,
    late_fill_extra=20,
    malformed_rate=0.002,
)


@dataclass
class Run:
    """A finished simulator run: every delivery concatenated, plus the truth as JSON data."""

    sim: Simulator
    deliveries: list[Delivery]
    truth: dict[str, Any]

    def frame(self, kind: str) -> pl.DataFrame:
        return pl.concat([d.frame(kind) for d in self.deliveries])

    @property
    def raw(self) -> list[RawMessage]:
        return [m for d in self.deliveries for m in d.raw]


def simulate(
    faults: FaultConfig, *, seed: int = 7, count: int = 40_000, symbols: int = 6, chunk: int = 4_000
) -> Run:
    """Small chunks on purpose: late fills, resets and reorders then cross chunk boundaries."""
    market = MarketConfig(symbols=symbol_names(symbols, seed), chunk_ticks=chunk)
    sim = Simulator(SimulatorConfig(market, faults, seed=seed))
    deliveries = list(sim.deliveries(count=count))
    return Run(sim, deliveries, sim.truth.to_dict())


@pytest.fixture(scope="module")
def faulty() -> Run:
    return simulate(FAULTS)


@pytest.fixture(scope="module")
def clean() -> Run:
    """The same market and resets as ``faulty``, without any other fault."""
    return simulate(FaultConfig(reset_rate=FAULTS.reset_rate, reorder_window=FAULTS.reorder_window))
