"""Hybrid queries: Iceberg history and the live Kafka tail, merged at an exact boundary."""

from __future__ import annotations

from k2.hybrid.engine import HybridEngine
from k2.hybrid.result import Boundary, HybridResult
from k2.hybrid.view import Anchor, View

__all__ = ["Anchor", "Boundary", "HybridEngine", "HybridResult", "View"]
