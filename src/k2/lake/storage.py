"""Where the warehouse's files live: FileIO properties for S3, and listing files through the FileIO.

Every read, write and delete of a table file goes through pyiceberg's FileIO, so a warehouse at
``file://`` and one at ``s3://`` take the same code path. FileIO cannot list a directory, which
orphan cleanup needs; ``list_files`` lists through the pyarrow filesystem the FileIO itself uses
(the same endpoint, credentials and region), and names files in the form Iceberg's metadata uses,
so the two can be compared as strings.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlparse

from pyarrow import fs as pafs
from pyiceberg.io import (
    S3_ACCESS_KEY_ID,
    S3_ENDPOINT,
    S3_REGION,
    S3_SECRET_ACCESS_KEY,
    FileIO,
)
from pyiceberg.io.pyarrow import PyArrowFileIO

from k2.config import S3Settings, Settings
from k2.lake.errors import StorageError

__all__ = [
    "S3_SCHEMES",
    "StoredFile",
    "arrow_filesystem",
    "canonical",
    "file_io_properties",
    "is_object_store",
    "list_files",
]

S3_SCHEMES = ("s3", "s3a", "s3n")


@dataclass(frozen=True)
class StoredFile:
    """One file under a table's location, as the storage lists it."""

    location: str  # canonical: scheme://… (see ``canonical``)
    size: int
    mtime_s: float  # seconds since the epoch


def is_object_store(warehouse: str) -> bool:
    return urlparse(warehouse).scheme in S3_SCHEMES


def file_io_properties(settings: Settings) -> dict[str, str]:
    """The FileIO properties of the configured warehouse: none for local disk, S3's for ``s3://``.

    The region is always given: without one pyarrow asks AWS where the bucket lives, which a
    local server cannot answer. Keys are left out for an external endpoint without a configured
    secret, so AWS's own chain (instance role, ``~/.aws``) supplies them.

    Raises:
        StorageError: the warehouse is on K2's local S3 server, whose secret does not exist yet.
    """
    if not is_object_store(settings.warehouse):
        return {}
    return s3_properties(settings.s3)


def s3_properties(s3: S3Settings) -> dict[str, str]:
    """FileIO properties (pyiceberg's own keys) for the S3 section; see ``file_io_properties``.

    Raises:
        StorageError: the local server's secret does not exist yet.
    """
    props = {S3_ENDPOINT: s3.effective_endpoint, S3_REGION: s3.region}
    secret = s3.secret()
    if secret is None:
        if s3.managed:
            raise StorageError(
                f"the warehouse is on K2's local S3 server, which has not been started from this data "
                f"directory yet (no secret at {s3.secret_file}); run `k2 services up s3`, or set "
                "K2_S3__ENDPOINT and K2_S3__SECRET_ACCESS_KEY for another S3"
            )
        return props
    props[S3_ACCESS_KEY_ID] = s3.access_key_id
    props[S3_SECRET_ACCESS_KEY] = secret
    return props


def _arrow_io(io: FileIO) -> PyArrowFileIO:
    """The pyarrow FileIO itself, or one with the same properties (a table's io may be fsspec's)."""
    return io if isinstance(io, PyArrowFileIO) else PyArrowFileIO(io.properties)


def arrow_filesystem(io: FileIO, location: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem the FileIO uses for ``location``, and the location's path in it."""
    arrow = _arrow_io(io)
    scheme, netloc, path = arrow.parse_location(location, arrow.properties)
    return arrow.fs_by_scheme(scheme, netloc), path


def canonical(location: str) -> str:
    """``scheme://path`` as listing returns it: ``/a/b`` and ``file:///a/b`` are one file."""
    scheme, netloc, path = PyArrowFileIO.parse_location(location)
    return _join(scheme, netloc, path)


def _join(scheme: str, netloc: str, path: str) -> str:
    # parse_location keeps the bucket in an object store's path and drops it from hdfs's.
    if netloc and not path.startswith(netloc):
        return f"{scheme}://{netloc}{path}"
    return f"{scheme}://{path}"


def list_files(io: FileIO, location: str) -> Iterator[StoredFile]:
    """Every file below ``location`` (recursively), through the FileIO's own filesystem.

    A location that does not exist lists nothing. On an object store "directories" are only key
    prefixes; they are not listed.

    Raises:
        StorageError: the storage refused or failed the listing (the message names the location).
    """
    filesystem, path = arrow_filesystem(io, location)
    scheme, netloc, _ = PyArrowFileIO.parse_location(location)
    try:
        infos = filesystem.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    except OSError as exc:
        raise StorageError(f"cannot list {location}: {exc}") from exc
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        mtime = info.mtime.timestamp() if info.mtime is not None else 0.0
        yield StoredFile(_join(scheme, netloc, info.path), int(info.size or 0), mtime)
