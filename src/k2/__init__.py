"""K2: a market-data lakehouse. Kafka → Iceberg with sequence checks, queried by DuckDB."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from k2.config import Settings, load_settings
from k2.errors import K2Error

__all__ = ["K2Error", "Settings", "__version__", "load_settings"]

try:
    __version__ = version("k2")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
