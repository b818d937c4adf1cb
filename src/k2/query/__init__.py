"""The query engine: DuckDB over Iceberg snapshots, with planning and aggregate caches."""

from __future__ import annotations

from k2.query.engine import QueryEngine
from k2.query.params import TimeRange, TimeTravel
from k2.query.reader import QueryLimits, Result

__all__ = ["QueryEngine", "QueryLimits", "Result", "TimeRange", "TimeTravel"]
