"""Hot rows: recently read data files kept decoded in memory, indexed by symbol and time.

A streaming table's recent files are small and read over and over (the last minutes of a few
symbols). Decoding Parquet is most of such a query's cost, so the engine keeps decoded files in an
LRU (bounded by rows and bytes), each sorted by (symbol, exchange_ts, sequence) with the row range
of every symbol. A query for symbols and a window then takes zero-copy slices (two binary searches per
symbol per file) and hands DuckDB one small Arrow table; its SQL, parameters and results are the
same as over ``read_parquet``. Files never change, so an entry is valid in every snapshot that
holds the file. Scans too large for the cache fall back to ``read_parquet``. A miss is read with
pyarrow (``k2.query.parquet``: footers kept, no SQL to bind); a query for a few symbols reads only
the row groups that can hold them and caches its rows per (file, symbol); a symbol whose rows in
a file span more than ``LONG_RUN_GROUPS`` row groups (a busy symbol-day) is read and cached by row
group instead, only the groups whose times meet the query's window. Prefetch caches whole files.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from k2.observability.metrics import REGISTRY, Counter
from k2.query.parquet import plain
from k2.query.partials import symbol_index

if TYPE_CHECKING:
    from k2.query.reader import LakeReader, Scan

__all__ = [
    "DEFAULT_BYTES",
    "DEFAULT_ROWS",
    "ROW_LOOKUPS",
    "SYMBOL_ENTRIES",
    "FileRows",
    "RowCache",
    "hot_rows",
    "prefetch",
    "source_rows",
]

#: The order a cached file's rows are kept in, for zero-copy slices by symbol and time.
_ORDER = ("symbol", "exchange_ts", "sequence")

#: The cache's bounds unless configured (``api.row_cache_rows`` and ``api.row_cache_mb`` say the same).
DEFAULT_ROWS = 8_000_000
DEFAULT_BYTES = 1024 << 20

#: Bytes per decoded row assumed before the cache holds any (a trade is ~150 B in Arrow).
_ROW_BYTES = 150

#: A miss of a query for at most this many symbols reads only their rows of each file (cached per
#: file and symbol); more symbols, and prefetch, read and cache whole files.
SYMBOL_ENTRIES = 4

ROW_LOOKUPS = Counter(
    "k2_query_row_cache_total", "Hot-row cache lookups per file", ["table", "result"], registry=REGISTRY
)


@dataclass(frozen=True)
class FileRows:
    """One data file's rows sorted by (symbol, exchange_ts, sequence), with a symbol index."""

    table: pa.Table
    ts: np.ndarray  # exchange_ts in µs, in table order
    index: dict[str, tuple[int, int]]

    @property
    def nbytes(self) -> int:
        """Memory the entry holds: its Arrow buffers (a slice counts its own range) and its times."""
        return int(self.table.nbytes) + int(self.ts.nbytes) + 100 * len(self.index)

    @classmethod
    def of(cls, table: pa.Table) -> FileRows:
        if "symbol" in table.column_names and table.column("symbol").null_count:
            table = table.filter(pc.is_valid(table.column("symbol")))  # no query asks for a null symbol
        table = _in_order(table.combine_chunks())
        ts = (
            table.column("exchange_ts").cast(pa.int64()).to_numpy()
            if table.num_rows
            else np.zeros(0, np.int64)
        )
        return cls(table, ts, symbol_index(table))

    def only(self, symbol: str) -> FileRows:
        """This file's rows of one symbol (zero-copy), indexed alone."""
        lo, hi = self.index.get(symbol, (0, 0))
        return FileRows(
            self.table.slice(lo, hi - lo), self.ts[lo:hi], {symbol: (0, hi - lo)} if hi > lo else {}
        )

    def detached(self) -> FileRows:
        """A copy that holds only its own rows (a slice keeps the buffers of the whole table alive)."""
        return FileRows(self.table.take(np.arange(self.table.num_rows)), self.ts.copy(), self.index)

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


def _in_order(table: pa.Table) -> pa.Table:
    """The table in (symbol, exchange_ts, sequence) order. K2 writes its files in that order, so a
    read without ORDER BY (a third faster) usually is: checked in one vectorised pass of adjacent
    rows, sorted only when it is not (a file from another writer, a scan that interleaved files)."""
    n = table.num_rows
    names = [c for c in _ORDER if c in table.column_names]
    order = [(c, "ascending") for c in names]
    keys = [table.column(c) for c in names]
    if n < 2 or not keys:
        return table
    if any(k.null_count for k in keys):
        return table.sort_by(order)
    before, after = [k.slice(0, n - 1) for k in keys], [k.slice(1) for k in keys]
    # row i <= row i+1, compared key by key from the last one: ties fall through to the next key
    ok = pc.less_equal(before[-1], after[-1])
    for i in range(len(keys) - 2, -1, -1):
        ok = pc.or_(pc.less(before[i], after[i]), pc.and_(pc.equal(before[i], after[i]), ok))
    return table if pc.all(ok).as_py() else table.sort_by(order)


class RowCache:
    """LRU of decoded files, bounded by total rows (0 disables it), by bytes and by entries.

    An entry is a whole file (``path``: prefetch, warm-up, multi-symbol scans) or one symbol's rows of
    a file (``(path, symbol)``: a query's miss reads only what it asks for). A symbol a file does not
    hold is an empty entry, which costs no rows: ``max_items`` bounds those.
    """

    def __init__(
        self, max_rows: int = DEFAULT_ROWS, max_items: int = 200_000, max_bytes: int = DEFAULT_BYTES
    ) -> None:
        self.max_rows = max_rows
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._items: OrderedDict[str | tuple[str, str], FileRows] = OrderedDict()
        self._by_path: dict[str, set[str | tuple[str, str]]] = {}
        self._rows = 0
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, path: str, symbol: str | None = None) -> FileRows | None:
        key = path if symbol is None else (path, symbol)
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, path: str, item: FileRows, symbol: str | None = None) -> None:
        key = path if symbol is None else (path, symbol)
        with self._lock:
            self._pop(key)
            self._items[key] = item
            self._by_path.setdefault(path, set()).add(key)
            self._rows += item.table.num_rows
            self._bytes += item.nbytes
            while (
                self._rows > self.max_rows
                or self._bytes > self.max_bytes
                or len(self._items) > self.max_items
            ) and len(self._items) > 1:
                self._pop(next(iter(self._items)))

    def _pop(self, key: str | tuple[str, str]) -> FileRows | None:
        item = self._items.pop(key, None)
        if item is not None:
            self._rows -= item.table.num_rows
            self._bytes -= item.nbytes
            path = key if isinstance(key, str) else key[0]
            keys = self._by_path.get(path)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_path[path]
        return item

    def discard(self, paths: set[str], *, whole_only: bool = False) -> int:
        """Drop the entries of ``paths`` (files no kept snapshot holds any more); entries dropped.

        ``whole_only``: only whole-file entries (prefetched files beyond the warm budget), leaving
        the symbols queries asked for.
        """
        with self._lock:
            dropped = 0
            for path in paths:
                keys = [path] if whole_only else list(self._by_path.get(path, ()))
                dropped += sum(self._pop(key) is not None for key in keys)
            return dropped

    @property
    def rows(self) -> int:
        return self._rows

    @property
    def nbytes(self) -> int:
        return self._bytes

    def capacity_rows(self) -> int:
        """Rows the cache can hold: ``max_rows``, or fewer if the bytes bound comes first (estimated
        from the rows held, else at ``_ROW_BYTES``)."""
        with self._lock:
            per_row = self._bytes / self._rows if self._rows else _ROW_BYTES
        return min(self.max_rows, int(self.max_bytes / max(per_row, 1.0)))

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
    by_symbol = len(symbols) <= SYMBOL_ENTRIES
    found: list[FileRows] = []
    missing: list[str] = []
    candidates: list[tuple[str, str]] = []  # (file, symbol) not cached
    for path in scan.files:
        item = cache.get(path)
        if item is not None:
            found.append(item)
        elif not by_symbol:
            missing.append(path)
        else:
            for symbol in symbols:
                part = cache.get(path, symbol)
                if part is not None:
                    found.append(part)
                else:
                    candidates.append((path, symbol))
    # a symbol's rows are a fraction of its files; the bound is the files' size either way (checked
    # before any footer is read: a scan this big goes to read_parquet)
    size = sum(scan.records.get(p, 0) for p in missing)
    size += sum(scan.records.get(p, 0) for p in {p for p, _ in candidates}) // 4
    if _too_big(cache, scan, size):
        return None
    pairs: list[tuple[str, str]] = []  # (file, symbol) read alone
    runs: list[tuple[str, str, list[int]]] = []  # (file, busy symbol, the row groups its window needs)
    for path, symbol in candidates:
        groups = _long_run(reader, scan.table, path, symbol, start_us, end_us)
        if groups is None:
            pairs.append((path, symbol))
        else:
            runs.append((path, symbol, groups))
    if runs:  # whole row groups, of every symbol in them: counted too
        unread = {(p, g) for p, _, groups in runs for g in groups if cache.get(p, f"{_GROUP}{g}") is None}
        size += sum(reader.parquet.footer(p).metadata.row_group(g).num_rows for p, g in unread)
        if _too_big(cache, scan, size):
            return None
    spans: list[tuple[FileRows, str]] = []  # (row group, the symbol it was read for)
    grouped: set[str] = set()  # files some of whose row groups were read
    for path, symbol, groups in runs:
        items, read = _groups(reader, cache, scan.table, path, groups)
        spans += [(item, symbol) for item in items]
        grouped |= {path} if read else set()
    if missing:
        found += _load(reader, cache, scan.table, missing)
    if pairs:
        found += _load_symbols(reader, cache, scan.table, pairs)
    misses = len(missing) + len({p for p, _ in pairs} | grouped)
    ROW_LOOKUPS.labels(scan.table, "hit").inc(len(scan.files) - misses)
    ROW_LOOKUPS.labels(scan.table, "miss").inc(misses)
    pieces = [piece for item in found for piece in item.window(symbols, start_us, end_us)]
    pieces += [piece for item, symbol in spans for piece in item.window([symbol], start_us, end_us)]
    if pieces:
        return pa.concat_tables(pieces, promote_options="permissive")
    if found or spans:
        return (found or [item for item, _ in spans])[0].table.slice(0, 0)
    return plain(scan.schema.empty_table())  # as DuckDB types it: every column nullable


def _too_big(cache: RowCache, scan: Scan, rows: int) -> bool:
    """More rows to read than a quarter of the cache: one big scan must not flush the hot set."""
    if rows <= cache.capacity_rows() // 4:
        return False
    ROW_LOOKUPS.labels(scan.table, "bypass").inc(len(scan.files))
    return True


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


def _load_symbols(
    reader: LakeReader, cache: RowCache, table: str, pairs: list[tuple[str, str]]
) -> list[FileRows]:
    """Read only the asked symbols' row groups of files not cached, and cache each (file, symbol)
    apart (a symbol a file does not hold: an empty entry, so the miss is not read again)."""
    wanted: dict[str, list[str]] = {}
    for path, symbol in pairs:
        wanted.setdefault(path, []).append(symbol)
    out = []
    for path, symbols in wanted.items():
        rows = FileRows.of(reader.parquet.read(f"{table}_rows", path, symbols))
        for symbol in symbols:
            item = rows.only(symbol)
            if item.table.num_rows < rows.table.num_rows:  # its own buffers, not the whole read's:
                item = item.detached()  # the cache counts only the entry's rows
            cache.put(path, item, symbol)
            out.append(item)
    return out


#: A symbol whose rows in a file span more row groups than this is read and cached by row group,
#: only those its window needs: a busy symbol-day (75,000 rows) read whole took 30-38 ms of a cold
#: 15-minute window, the tail of bench_peers' window p99.
LONG_RUN_GROUPS = 2


def _long_run(
    reader: LakeReader, table: str, path: str, symbol: str, start_us: int, end_us: int
) -> list[int] | None:
    """The row groups of ``symbol``'s rows in ``path`` whose times meet [start, end), when its rows
    span more than ``LONG_RUN_GROUPS`` groups and the file's times have statistics; None otherwise
    (the symbol's rows are read whole)."""
    footer = reader.parquet.footer(path, f"{table}_rows")
    groups = footer.groups([symbol])
    if len(groups) <= LONG_RUN_GROUPS or any(footer.first[g] is None for g in groups):
        return None
    return footer.during(groups, start_us, end_us)


def _groups(
    reader: LakeReader, cache: RowCache, table: str, path: str, groups: list[int]
) -> tuple[list[FileRows], int]:
    """These row groups of ``path`` from the cache or read (and cached) one by one, each entry
    holding every symbol of its group; and how many were read."""
    out, read = [], 0
    for group in groups:
        key = f"{_GROUP}{group}"
        item = cache.get(path, key)
        if item is None:
            item = FileRows.of(reader.parquet.read_groups(f"{table}_rows", path, [group]))
            cache.put(path, item, key)
            read += 1
        out.append(item)
    return out, read


#: The "symbol" of a row-group entry (``(path, "\x00group 3")``): no symbol starts with a NUL.
_GROUP = "\x00group "


def _load(reader: LakeReader, cache: RowCache, table: str, paths: list[str]) -> list[FileRows]:
    """Decode whole files, sorted for slicing, and cache them."""
    out = []
    for path in paths:
        item = FileRows.of(reader.parquet.read(f"{table}_rows", path))
        cache.put(path, item)
        out.append(item)
    return out
