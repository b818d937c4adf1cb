"""Iceberg: catalog, table definitions, the compare-and-set writer, maintenance."""

from __future__ import annotations

from k2.lake.catalog import open_catalog
from k2.lake.tables import TABLES, ensure_tables, load_table

__all__ = ["TABLES", "ensure_tables", "load_table", "open_catalog"]
