"""Hot rows: recently read data files kept decoded in memory, indexed by symbol and time.

A streaming table's recent files are small and read over and over (the last minutes of a few
symbols). Decoding Parquet is most of such a query's cost, so the engine keeps decoded files in an
LRU (bounded by rows), each sorted by (symbol, exchange_ts, sequence) with the row range of every
symbol. A query for symbols and a window then takes zero-copy slices (two binary searches per
symbol per file) and hands DuckDB one small Arrow table; its SQL, parameters and results are the
same as over ``read_parquet``. Files never change, so an entry is valid in every snapshot that
holds the file. Scans too large for the cache fall back to ``read_parquet``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from k2.lake.stamp import STAMP_COLUMN
from k2.observability.metrics import REGISTRY, Counter
from k2.query.partials import split_by_file, symbol_index
from k2.query.runner import normalise

if TYPE_CHECKING:
    from k2.query.reader import LakeReader, Scan

__all__ = ["ROW_LOOKUPS", "FileRows", "RowCache", "hot_rows", "prefetch", "source_rows"]

ROW_LOOKUPS = Counter(
    "k2_query_row_cache_total", "Hot-row cache lookups per file", ["table", "result"], registry=REGISTRY
)


@dataclass(frozen=True)
class FileRows:
    """One data file's rows sorted by (symbol, exchange_ts, sequence), with a symbol index."""

    table: pa.Table
    ts: np.ndarray  # exchange_ts in µs, in table order
    index: dict[str, tuple[int, int]]

    @classmethod
    def of(cls, table: pa.Table) -> FileRows:
        table = table.combine_chunks()
        ts = (
            table.column("exchange_ts").cast(pa.int64()).to_numpy()
            if table.num_rows
            else np.zeros(0, np.int64)
        )
        return cls(table, ts, symbol_index(table))

    def window(self, symbols: Sequence[str], start_us: int, end_us: int) -> list[pa.Table]:
        out = []
        for symbol in symbols:
            span = self.index.get(symbol)
            if span is None:
                continue
            lo, hi = span
            times = self.ts[lo:hi]
            first = lo + int(np.searchsorted(times, start_us, side="left"))
            last = lo + int(np.searchsorted(times, end_us, side="left"))
            if last > first:
                out.append(self.table.slice(first, last - first))
        return out


class RowCache:
    """LRU of decoded files, bounded by total rows (0 disables it)."""

    def __init__(self, max_rows: int = 2_000_000) -> None:
        self.max_rows = max_rows
        self._items: OrderedDict[str, FileRows] = OrderedDict()
        self._rows = 0
        self._lock = threading.Lock()

    def get(self, path: str) -> FileRows | None:
        with self._lock:
            item = self._items.get(path)
            if item is not None:
                self._items.move_to_end(path)
            return item

    def put(self, path: str, item: FileRows) -> None:
        with self._lock:
            old = self._items.pop(path, None)
            if old is not None:
                self._rows -= old.table.num_rows
            self._items[path] = item
            self._rows += item.table.num_rows
            while self._rows > self.max_rows and len(self._items) > 1:
                _, dropped = self._items.popitem(last=False)
                self._rows -= dropped.table.num_rows

    def discard(self, paths: set[str]) -> int:
        """Drop the entries of ``paths`` (files no kept snapshot holds any more); entries dropped."""
        with self._lock:
            dropped = 0
            for path in paths:
                item = self._items.pop(path, None)
                if item is not None:
                    self._rows -= item.table.num_rows
                    dropped += 1
            return dropped

    @property
    def rows(self) -> int:
        return self._rows

    def __len__(self) -> int:
        return len(self._items)


def hot_rows(
    reader: LakeReader, scan: Scan, symbols: Sequence[str], start_us: int, end_us: int
) -> pa.Table | None:
    """The scan's rows of ``symbols`` in [start, end) from the hot cache (loading missing files).

    Returns None when the cache is off, or when the files not yet cached hold more than a quarter
    of its capacity (one big scan must not flush the hot set): read Parquet instead. Columns keep
    the file schema, strings as plain ``string``; rows are grouped by file, then symbol.
    """
    cache = reader.rows
    if cache.max_rows <= 0 or not symbols or scan.until_ms is not None:  # a cut holds part of a file
        return None
    found: list[FileRows] = []
    missing: list[str] = []
    for path in scan.files:
        item = cache.get(path)
        if item is None:
            missing.append(path)
        else:
            found.append(item)
    if missing:
        size = sum(scan.records.get(p, 0) for p in missing)
        if size > cache.max_rows // 4:
            ROW_LOOKUPS.labels(scan.table, "bypass").inc(len(scan.files))
            return None
        found += _load(reader, cache, scan.table, missing)
    ROW_LOOKUPS.labels(scan.table, "hit").inc(len(scan.files) - len(missing))
    ROW_LOOKUPS.labels(scan.table, "miss").inc(len(missing))
    pieces = [piece for item in found for piece in item.window(symbols, start_us, end_us)]
    if pieces:
        return pa.concat_tables(pieces, promote_options="permissive")
    return found[0].table.slice(0, 0) if found else normalise(scan.schema.empty_table())


def source_rows(
    reader: LakeReader,
    scan: Scan,
    symbols: Sequence[str],
    start_us: int,
    end_us: int,
    params: list[Any],
    tables: dict[str, pa.Table],
    alias: str,
) -> str:
    """A FROM item for ``scan`` restricted to symbols and [start, end): hot rows, or read_parquet."""
    rows = hot_rows(reader, scan, symbols, start_us, end_us) if scan.files else None
    if rows is None:
        return scan.source(params, tables, alias)
    tables[f"_rows_{alias}"] = rows
    return f"_rows_{alias}"


def prefetch(reader: LakeReader, table: str, paths: Sequence[str]) -> int:
    """Decode the files not yet cached into the hot-row cache (warm-up, new snapshots); rows loaded.

    The caller bounds ``paths`` (``k2.query.warmup`` keeps them within its row budget, itself
    within the cache), so a prefetch does not flush the hot set.
    """
    cache = reader.rows
    missing = [p for p in paths if cache.get(p) is None]
    if cache.max_rows <= 0 or not missing:
        return 0
    return sum(item.table.num_rows for item in _load(reader, cache, table, missing))


def _load(reader: LakeReader, cache: RowCache, table: str, paths: list[str]) -> list[FileRows]:
    """Decode files in one DuckDB read, sorted for slicing, and cache them."""
    # by name: files written before the commit stamp existed lack that column (not kept here)
    sql = (
        "SELECT * FROM read_parquet(?, filename = true, union_by_name = true) "
        "ORDER BY filename, symbol, exchange_ts, sequence"
    )
    data = reader.runner.table(
        f"{table}_rows", sql, [paths], timeout_s=reader.limits.timeout_s, files=len(paths)
    )
    if STAMP_COLUMN in data.column_names:
        data = data.drop_columns([STAMP_COLUMN])
    by_file, none = split_by_file(data)
    out = []
    for path in paths:
        item = FileRows.of(normalise(by_file.get(path.removeprefix("file://"), none)))
        cache.put(path, item)
        out.append(item)
    return out
