"""Opening the Iceberg catalog: SQLite by default, PostgreSQL (or any SQLAlchemy URI) when configured."""

from __future__ import annotations

from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import SqlCatalog

from k2.config import Settings
from k2.lake.errors import CatalogError
from k2.lake.storage import file_io_properties

__all__ = ["open_catalog"]


def open_catalog(settings: Settings) -> Catalog:
    """The SQL catalog named by the settings, with its namespace created.

    A warehouse at ``s3://`` gets the S3 section's endpoint, region and keys as FileIO
    properties: every table the catalog loads reads and writes through them.

    Raises:
        CatalogError: the URI's driver is not installed or the catalog cannot be reached.
        StorageError: the warehouse is on K2's local S3 server, not started yet.
    """
    uri = settings.catalog_uri
    if uri.startswith("sqlite:///"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.warehouse.startswith("file://"):
        from pathlib import Path

        Path(settings.warehouse.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
    io_properties = file_io_properties(settings)
    try:
        catalog = SqlCatalog(
            settings.lake.catalog_name, uri=uri, warehouse=settings.warehouse, **io_properties
        )
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
