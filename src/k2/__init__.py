"""K2: a market-data lakehouse. Kafka → Iceberg with sequence checks, queried by DuckDB.

The package root stays light (no pydantic, no I/O) so that ``k2 --help`` starts at once; the
configuration is ``k2.config.Settings``, the entry points are the ``k2`` command (``k2.cli``), the
API factory (``k2.api.create_app``) and the client (``k2.client.K2Client``).
"""

from __future__ import annotations

from k2.errors import K2Error

__all__ = ["K2Error", "__version__"]

#: The one place the version is written: pyproject.toml reads it from here (tool.setuptools.dynamic).
__version__ = "0.1.0"
