"""Opening the Iceberg catalog: SQLite by default, PostgreSQL (or any SQLAlchemy URI) when configured."""

from __future__ import annotations

from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import SqlCatalog
from sqlalchemy.exc import IntegrityError, ProgrammingError

from k2.config import Settings
from k2.lake.errors import CatalogError
from k2.lake.storage import file_io_properties

__all__ = ["open_catalog"]

#: Opens of a new catalog that may lose a creation race to another process before K2 gives up.
_CREATE_ATTEMPTS = 3


def open_catalog(settings: Settings) -> Catalog:
    """The SQL catalog named by the settings, with its namespace created.

    A warehouse at ``s3://`` gets the S3 section's endpoint, region and keys as FileIO
    properties: every table the catalog loads reads and writes through them.

    A server catalog (PostgreSQL) checks each pooled connection before use: a long-running ingester
    or API then rides through a restart of the server instead of failing its next commit on a
    connection the server has closed. Processes that open a new catalog at the same moment may race
    to create it: the losers open it again.

    Raises:
        CatalogError: the URI's driver is not installed or the catalog cannot be reached.
        StorageError: the warehouse is on K2's local S3 server, not started yet.
    """
    uri = settings.catalog_uri
    server = not uri.startswith("sqlite")
    if uri.startswith("sqlite:///"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.warehouse.startswith("file://"):
        from pathlib import Path

        Path(settings.warehouse.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
    options = {**({"pool_pre_ping": "true"} if server else {}), **file_io_properties(settings)}
    attempt = 1
    while True:
        try:
            return _open(settings, uri, options)
        except (IntegrityError, ProgrammingError) as exc:
            # Several processes opening a new catalog at once (N ingesters starting together) race
            # to create its tables and namespace; a loser's CREATE fails (a duplicate relation, or a
            # unique index of PostgreSQL's own catalog) or its INSERT does. What it was creating
            # exists now: open the catalog again. A genuine error repeats, and is raised.
            if attempt == _CREATE_ATTEMPTS:
                raise CatalogError(f"cannot create the Iceberg catalog: {_first_line(exc)}") from exc
            attempt += 1


def _open(settings: Settings, uri: str, options: dict[str, str]) -> Catalog:
    """One attempt: the catalog, its tables and the namespace, created where missing.

    Raises:
        IntegrityError, ProgrammingError: another process created the same table (a duplicate type
            or relation) or namespace at the same moment.
        CatalogError: the driver is missing or the catalog cannot be reached.
    """
    try:
        catalog = SqlCatalog(settings.lake.catalog_name, uri=uri, warehouse=settings.warehouse, **options)
    except (IntegrityError, ProgrammingError):
        raise
    except ModuleNotFoundError as exc:
        raise CatalogError(
            f"the catalog URI needs a driver that is not installed ({exc.name}); "
            "for PostgreSQL install the extra: pip install 'k2[postgres]'"
        ) from exc
    except Exception as exc:
        hint = ""
        if uri.startswith("postgres") and settings.lake.catalog_uri is None:
            hint = " (is the local server up? `k2 services up postgres`)"
        raise CatalogError(
            f"cannot open the Iceberg catalog at {settings.masked()['effective']['catalog_uri']}{hint}: "
            f"{_first_line(exc)}"
        ) from exc
    catalog.create_namespace_if_not_exists(settings.lake.namespace)
    return catalog


def _first_line(exc: Exception) -> str:
    """SQLAlchemy appends the statement and a help link on further lines: the cause is the first."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
