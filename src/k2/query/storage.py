"""DuckDB reading table files on S3 through the lake's own FileIO filesystem.

DuckDB reads ``s3://`` itself only with its httpfs extension, which it downloads from its own
extension host at run time (nothing K2 installs can supply it: the PyPI builds of the extension
lag DuckDB's releases, and an extension must match DuckDB's exact version). Instead the pyarrow
S3 filesystem that pyiceberg's FileIO builds from the catalog's properties (endpoint, region,
keys) is registered with DuckDB as an fsspec filesystem for the ``s3``/``s3a``/``s3n`` schemes. Every
query keeps its ``read_parquet(...)`` SQL, its footer cache and its ``filename`` column, and reads
exactly what Iceberg wrote, with the same credentials. The hot-row cache's cold reads
(``k2.query.parquet``) read through the same pyarrow filesystem directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fsspec.implementations.arrow import ArrowFSWrapper
from pyarrow import fs as pafs
from pyiceberg.io.pyarrow import PyArrowFileIO

from k2.lake.storage import S3_SCHEMES, arrow_filesystem, is_object_store

__all__ = ["S3ArrowFileSystem", "object_path", "warehouse_filesystem"]


class S3ArrowFileSystem(ArrowFSWrapper):  # type: ignore[misc]  # fsspec is untyped
    """fsspec's wrapper of a pyarrow filesystem, answering for ``s3://`` paths (``bucket/key``)."""

    protocol = S3_SCHEMES
    root_marker = ""

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        return object_path(path).rstrip("/") if isinstance(path, str) else path


def object_path(path: str) -> str:
    """``bucket/key`` of an ``s3://`` (``s3a``, ``s3n``) path, as the pyarrow filesystem names it;
    any other path unchanged."""
    for scheme in S3_SCHEMES:
        if path.startswith(f"{scheme}://"):
            return path[len(scheme) + 3 :]
    return path


def warehouse_filesystem(properties: Mapping[str, str]) -> pafs.FileSystem | None:
    """The pyarrow filesystem of a catalog's S3 warehouse (the FileIO's, same credentials); None off S3."""
    warehouse = properties.get("warehouse", "")
    if not is_object_store(warehouse):
        return None
    filesystem, _ = arrow_filesystem(PyArrowFileIO(dict(properties)), warehouse)
    return filesystem
