"""Tick sources: the market simulator (with exact fault injection) and the ASX CSV replay."""

from __future__ import annotations

from k2.feeds.asx import AsxReplay, read_asx
from k2.feeds.delivery import Delivery, RawMessage
from k2.feeds.faults import FaultConfig
from k2.feeds.market import MarketConfig, symbol_names
from k2.feeds.publish import FeedCounts, FeedPublisher
from k2.feeds.reference import AsxReference, load_reference
from k2.feeds.simulator import Simulator, SimulatorConfig
from k2.feeds.truth import GroundTruth, load_truth

__all__ = [
    "AsxReference",
    "AsxReplay",
    "Delivery",
    "FaultConfig",
    "FeedCounts",
    "FeedPublisher",
    "GroundTruth",
    "MarketConfig",
    "RawMessage",
    "Simulator",
    "SimulatorConfig",
    "load_reference",
    "load_truth",
    "read_asx",
    "symbol_names",
]
