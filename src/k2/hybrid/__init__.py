"""Hybrid queries: Iceberg history and the live Kafka tail, merged at an exact boundary.

Names are re-exported lazily: ``k2.config`` nests ``k2.hybrid.settings``, and importing the whole
package there would pull Kafka, Polars and the query engine into every ``k2 --help`` (and import
``k2.config`` back).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__all__ = ["Anchor", "Boundary", "HybridEngine", "HybridResult", "HybridSettings", "View"]

_HOMES = {
    "Anchor": "engine",
    "HybridEngine": "engine",
    "View": "engine",
    "Boundary": "result",
    "HybridResult": "result",
    "HybridSettings": "settings",
}

if TYPE_CHECKING:
    from k2.hybrid.engine import Anchor, HybridEngine, View
    from k2.hybrid.result import Boundary, HybridResult
    from k2.hybrid.settings import HybridSettings


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'k2.hybrid' has no attribute {name!r}")
    return getattr(import_module(f"k2.hybrid.{home}"), name)
