"""Data files straight into Arrow for the hot-row cache: footers kept, only the row groups asked for.

The cache's cold reads went through DuckDB (``read_parquet(?, union_by_name = true)``). Binding
read every footer again, every row group of a file was decoded, and the result came back as one
table to be split by file. Here a file's footer is read once and kept (data files never change),
a read for a few symbols decodes only the row groups whose statistics can hold them, and each
file comes back alone, in the types DuckDB's path returned.

Measured on bench_peers' lake (2.2 M trades, 150 one-symbol misses): a cold 15-minute window took
4.2 ms against 7.6-8.4 ms (p50), and 8.4-11.8 ms against 13.9-16.7 ms (p90). An as-of join took
11.5 ms against 19.8-20.2 ms.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from k2.lake.stamp import STAMP_COLUMN
from k2.observability.logging import get_logger
from k2.query.errors import QueryError
from k2.query.runner import QUERY_FILES, QUERY_SECONDS, normalise
from k2.query.storage import object_path

__all__ = ["DataFiles", "Footer"]

log = get_logger(__name__)

#: Footers kept (each a few to tens of KB); the LRU drops the least recently read.
MAX_FOOTERS = 4096


@dataclass(frozen=True)
class Footer:
    """A file's Parquet metadata and, per row group, the range of its symbols and of its exchange
    times in µs (None: no statistics)."""

    metadata: pq.FileMetaData
    low: list[str | None]
    high: list[str | None]
    first: list[int | None]
    last: list[int | None]

    @classmethod
    def of(cls, metadata: pq.FileMetaData) -> Footer:
        names = metadata.schema.names
        symbol = names.index("symbol") if "symbol" in names else None
        ts = names.index("exchange_ts") if "exchange_ts" in names else None
        if (
            ts is not None
            and '"timeUnit":"microseconds"' not in metadata.schema.column(ts).logical_type.to_json()
        ):
            ts = None  # another writer's unit: its statistics do not compare with K2's µs
        low: list[str | None] = []
        high: list[str | None] = []
        first: list[int | None] = []
        last: list[int | None] = []
        for i in range(metadata.num_row_groups):
            group = metadata.row_group(i)
            stats = group.column(symbol).statistics if symbol is not None else None
            known = stats is not None and stats.has_min_max
            low.append(str(stats.min) if known and stats is not None else None)
            high.append(str(stats.max) if known and stats is not None else None)
            stats = group.column(ts).statistics if ts is not None else None
            timed = stats is not None and stats.has_min_max and stats.physical_type == "INT64"
            first.append(int(stats.min_raw) if timed and stats is not None else None)
            last.append(int(stats.max_raw) if timed and stats is not None else None)
        return cls(metadata, low, high, first, last)

    def groups(self, symbols: Collection[str]) -> list[int]:
        """The row groups that may hold any of ``symbols`` (all of them where statistics are missing)."""
        return [
            i
            for i, (lo, hi) in enumerate(zip(self.low, self.high, strict=True))
            if lo is None or hi is None or any(lo <= s <= hi for s in symbols)
        ]

    def during(self, groups: Iterable[int], start_us: int, end_us: int) -> list[int]:
        """Those of ``groups`` whose exchange times may fall in [start, end)."""
        return [
            i
            for i in groups
            if (first := self.first[i]) is None
            or (last := self.last[i]) is None
            or (first < end_us and last >= start_us)
        ]


class DataFiles:
    """Reads a table's data files into Arrow: from local disk, or ``s3://`` paths through
    ``filesystem`` (the warehouse's own, ``k2.query.storage.warehouse_filesystem``).

    Thread-safe: queries of several API workers read through one instance.
    """

    def __init__(self, filesystem: pafs.FileSystem | None = None, max_footers: int = MAX_FOOTERS) -> None:
        self._filesystem = filesystem
        self._footers: OrderedDict[str, Footer] = OrderedDict()
        self._max = max_footers
        self._lock = threading.Lock()

    def read(self, query: str, path: str, symbols: Collection[str] | None = None) -> pa.Table:
        """The rows of ``path`` (only the row groups that may hold ``symbols``, when given), with
        every column nullable and no field metadata, as DuckDB returned them; the commit stamp
        dropped (queries never see it).

        Raises:
            QueryError: the file is missing, unreadable or not Parquet; details go to the log.
        """
        groups = self.footer(path, query).groups(symbols) if symbols is not None else None
        return self.read_groups(query, path, groups)

    def read_groups(self, query: str, path: str, groups: list[int] | None) -> pa.Table:
        """The rows of these row groups of ``path`` (None: the whole file), as :meth:`read` gives them.

        Raises:
            QueryError: as :meth:`read`.
        """
        started = time.perf_counter()
        QUERY_FILES.labels(query).inc()
        with _failing(query, path):
            source, filesystem = self._locate(path)
            footer = self.footer(path, query)
            file = pq.ParquetFile(source, metadata=footer.metadata, filesystem=filesystem)
            table = file.read() if groups is None else file.read_row_groups(groups)
        if STAMP_COLUMN in table.column_names:
            table = table.drop_columns([STAMP_COLUMN])
        QUERY_SECONDS.labels(query).observe(time.perf_counter() - started)
        return plain(table)

    def footer(self, path: str, query: str = "rows") -> Footer:
        """The file's footer, read on first use and kept.

        Raises:
            QueryError: as :meth:`read`.
        """
        with self._lock:
            footer = self._footers.get(path)
            if footer is not None:
                self._footers.move_to_end(path)
                return footer
        with _failing(query, path):
            source, filesystem = self._locate(path)
            footer = Footer.of(pq.read_metadata(source, filesystem=filesystem))
        with self._lock:
            self._footers[path] = footer
            while len(self._footers) > self._max:
                self._footers.popitem(last=False)
        return footer

    def forget(self, paths: Iterable[str]) -> None:
        """Drop the footers of files no snapshot reads any more."""
        with self._lock:
            for path in paths:
                self._footers.pop(path, None)

    def __len__(self) -> int:
        return len(self._footers)

    def _locate(self, path: str) -> tuple[str, pafs.FileSystem | None]:
        if path.startswith("file://"):
            return path.removeprefix("file://"), None
        if "://" not in path:
            return path, None
        located = object_path(path)
        if located == path or self._filesystem is None:
            raise OSError(f"no filesystem here reads {path.split('://')[0]}:// paths")
        return located, self._filesystem


@contextmanager
def _failing(query: str, path: str) -> Iterator[None]:
    try:
        yield
    except (OSError, pa.ArrowException, UnicodeDecodeError) as exc:  # a mangled footer: its names
        log.error("data file read failed", query=query, path=path, error=str(exc))
        raise QueryError(f"the {query} query failed: {type(exc).__name__} reading a data file") from exc


def plain(table: pa.Table) -> pa.Table:
    """The types DuckDB gave the same file: every column nullable, no field or schema metadata,
    dictionaries decoded, times in µs (UTC when they have a time zone: DuckDB's TIMESTAMPTZ). A
    file's stored Arrow schema (another writer's) could otherwise bring back dictionaries, a
    Sydney time zone or milliseconds, which the cache compares as µs."""
    fields = [pa.field(f.name, _duckdb_type(f.type), nullable=True) for f in table.schema]
    schema = pa.schema(fields)
    if any(f.type != t.type for f, t in zip(fields, table.schema, strict=True)):
        table = table.cast(schema, safe=False)  # ns -> µs truncates, as DuckDB's TIMESTAMPTZ does
    elif not schema.equals(table.schema, check_metadata=True):
        table = pa.Table.from_arrays(table.columns, schema=schema)  # zero-copy: only the labels change
    return normalise(table)


def _duckdb_type(dtype: pa.DataType) -> pa.DataType:
    if pa.types.is_dictionary(dtype):
        return _duckdb_type(dtype.value_type)
    if pa.types.is_timestamp(dtype):
        return pa.timestamp("us", "UTC" if dtype.tz else None)
    return dtype
