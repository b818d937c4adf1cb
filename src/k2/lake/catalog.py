"""Opening the Iceberg catalog: SQLite by default, PostgreSQL (or any SQLAlchemy URI) when configured."""

from __future__ import annotations

from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import SqlCatalog

from k2.config import Settings
from k2.lake.errors import CatalogError

__all__ = ["open_catalog"]


def open_catalog(settings: Settings) -> Catalog:
    """The SQL catalog named by the settings, with its namespace created.

    Raises:
        CatalogError: the URI's driver is not installed or the catalog cannot be reached.
    """
    uri = settings.catalog_uri
    if uri.startswith("sqlite:///"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.warehouse.startswith("file://"):
        from pathlib import Path

        Path(settings.warehouse.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
    try:
        catalog = SqlCatalog(settings.lake.catalog_name, uri=uri, warehouse=settings.warehouse)
    except ModuleNotFoundError as exc:
        raise CatalogError(
            f"the catalog URI needs a driver that is not installed ({exc.name}); "
            "for PostgreSQL install the extra: pip install 'k2[postgres]'"
        ) from exc
    except Exception as exc:
        raise CatalogError(
            f"cannot open the Iceberg catalog at {settings.masked()['effective']['catalog_uri']}: {exc}"
        ) from exc
    catalog.create_namespace_if_not_exists(settings.lake.namespace)
    return catalog
