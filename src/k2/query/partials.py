"""Per-file partial aggregates, cached: the materialised layer behind bars and symbol statistics.

Iceberg data files never change once written, so an aggregate of one file (per symbol and bar
bucket: first/last key and price, high, low, volume, notional, count) stays true for as long as
the file exists, in every snapshot that holds it. A query then merges the partials of the files
its snapshot holds instead of re-reading the rows: after a streaming commit only the new file is
aggregated, after a compaction only the rewritten ones, and time travel reuses the same entries.
The merge is exact (first/last by (exchange_ts, sequence), sums of sums), not an approximation.

The cache is an LRU bounded by the number of partial rows it holds.

On top, ``consolidated`` keeps per partition (day x symbol bucket) the partials of *all* its files
merged into one table sorted by symbol, with the file set it covers. A streaming partition gains a
file per commit; its consolidated table is extended with the new files' partials (one merge of a
few thousand rows), never rebuilt, and a query then slices its symbols out of one table per
partition instead of visiting hundreds of per-file entries. A compaction (files removed) rebuilds
it from the per-file partials.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from k2.observability.metrics import REGISTRY, Counter
from k2.query.sql import cut_relation

if TYPE_CHECKING:
    from k2.query.reader import LakeReader, Scan

__all__ = [
    "PARTIAL_LOOKUPS",
    "Consolidated",
    "PartialCache",
    "consolidated",
    "partials_for",
    "split_by_file",
    "symbol_index",
]

PARTIAL_LOOKUPS = Counter(
    "k2_query_partials_total",
    "Per-file partial aggregates: hits and misses",
    ["kind", "result"],
    registry=REGISTRY,
)

_MAX_CONSOLIDATED = 4096
_RELATION = "read_parquet(?, filename = true)"  # what every ``build_sql`` reads its files with


@dataclass(frozen=True)
class Consolidated:
    """One partition's merged partials, sorted by symbol, and the files they cover."""

    files: frozenset[str]
    table: pa.Table
    index: dict[str, tuple[int, int]]  # symbol -> [lo, hi) rows

    @classmethod
    def of(cls, files: frozenset[str], table: pa.Table) -> Consolidated:
        """Index a table sorted by symbol: each symbol's rows are one contiguous slice."""
        return cls(files, table, symbol_index(table))

    def rows_of(self, symbols: Sequence[str]) -> list[pa.Table]:
        out = []
        for symbol in symbols:
            span = self.index.get(symbol)
            if span is not None:
                out.append(self.table.slice(span[0], span[1] - span[0]))
        return out


class PartialCache:
    """LRU of Arrow tables keyed by (file path, aggregate key), bounded by total rows."""

    def __init__(self, max_rows: int = 4_000_000) -> None:
        self.max_rows = max_rows
        self._items: OrderedDict[tuple[str, Hashable], pa.Table] = OrderedDict()
        self._rows = 0
        self._lock = threading.Lock()
        self._merged: OrderedDict[tuple[Hashable, Hashable], Consolidated] = OrderedDict()

    def merged(self, group: Hashable, key: Hashable) -> Consolidated | None:
        with self._lock:
            item = self._merged.get((group, key))
            if item is not None:
                self._merged.move_to_end((group, key))
            return item

    def put_merged(self, group: Hashable, key: Hashable, item: Consolidated) -> None:
        with self._lock:
            self._merged[(group, key)] = item
            self._merged.move_to_end((group, key))
            while len(self._merged) > _MAX_CONSOLIDATED:
                self._merged.popitem(last=False)

    def get(self, path: str, key: Hashable) -> pa.Table | None:
        with self._lock:
            item = self._items.get((path, key))
            if item is not None:
                self._items.move_to_end((path, key))
            return item

    def put(self, path: str, key: Hashable, table: pa.Table) -> None:
        with self._lock:
            old = self._items.pop((path, key), None)
            if old is not None:
                self._rows -= old.num_rows
            self._items[(path, key)] = table
            self._rows += table.num_rows
            while self._rows > self.max_rows and len(self._items) > 1:
                _, dropped = self._items.popitem(last=False)
                self._rows -= dropped.num_rows

    def discard(self, paths: set[str]) -> int:
        """Drop the partials of ``paths`` under every key (files compacted away); entries dropped."""
        if not paths:
            return 0
        with self._lock:
            doomed = [k for k in self._items if k[0] in paths]
            for k in doomed:
                self._rows -= self._items.pop(k).num_rows
            return len(doomed)

    @property
    def rows(self) -> int:
        return self._rows

    def __len__(self) -> int:
        return len(self._items)


def _local(path: str) -> str:
    """DuckDB reports ``file://`` paths without the scheme; compare both the same way."""
    return path.removeprefix("file://")


def partials_for(
    reader: LakeReader,
    cache: PartialCache,
    scan: Scan,
    key: Hashable,
    kind: str,
    build_sql: Callable[[list[Any]], str],
    empty: pa.Schema | None = None,
) -> pa.Table:
    """The partials of every file of ``scan`` (cached ones reused, the rest computed in one query).

    ``build_sql(params)`` returns SQL over ``read_parquet(?, filename = true)`` grouped by
    ``filename`` (it appends its own parameters after the file list, which is bound first).
    """
    key = _cut_key(scan, key)
    parts: list[pa.Table] = []
    missing: list[str] = []
    for path in scan.files:
        hit = cache.get(path, key)
        if hit is None:
            missing.append(path)
        else:
            parts.append(hit)
    PARTIAL_LOOKUPS.labels(kind, "hit").inc(len(parts))
    PARTIAL_LOOKUPS.labels(kind, "miss").inc(len(missing))
    if missing:
        params: list[Any] = [missing]
        sql = build_sql(params)
        if scan.until_ms is not None:  # the relation's first parameter is the file list
            sql = sql.replace(_RELATION, cut_relation(_RELATION), 1)
            params.insert(1, scan.until_ms)
        computed = reader.runner.table(
            f"{kind}_partials", sql, params, timeout_s=reader.limits.timeout_s, files=len(missing)
        )
        by_file, none = split_by_file(computed)
        for path in missing:
            piece = by_file.get(_local(path))
            piece = piece if piece is not None else none
            cache.put(path, key, piece)
            parts.append(piece)
    if not parts:
        return empty.empty_table() if empty is not None else pa.table({})
    return pa.concat_tables(parts, promote_options="permissive") if len(parts) > 1 else parts[0]


def consolidated(
    reader: LakeReader,
    cache: PartialCache,
    scan: Scan,
    key: Hashable,
    kind: str,
    build_sql: Callable[[list[Any]], str],
    merge_sql: tuple[str, list[Any]],
    symbols: Sequence[str],
) -> list[pa.Table]:
    """The merged partials of ``symbols`` from every partition of ``scan`` (whole partitions).

    ``merge_sql`` (SQL, parameters) re-aggregates partials read from ``_p``, sorted by symbol; its
    result may add columns, but must keep the partial ones (it is merged again on extension).
    The scan must come from a ``Prune(by_partition=True)`` so that a partition's file set does not
    depend on one query's window.
    """
    merged_key = _cut_key(scan, key)
    groups: dict[tuple[int, int, int], list[str]] = defaultdict(list)
    for path, group in zip(scan.files, scan.groups, strict=True):
        groups[group].append(path)
    out: list[pa.Table] = []
    for group, paths in groups.items():
        want = frozenset(paths)
        have = cache.merged(group, merged_key)
        if have is not None and have.files == want:
            PARTIAL_LOOKUPS.labels(kind, "merged_hit").inc()
            out += have.rows_of(symbols)
            continue
        if have is not None and have.files <= want:  # appends since: extend, do not rebuild
            fresh = [p for p in paths if p not in have.files]
            parts = [have.table, partials_for(reader, cache, _with_files(scan, fresh), key, kind, build_sql)]
        else:  # first use, or files were removed (compaction): rebuild from per-file partials
            parts = [partials_for(reader, cache, _with_files(scan, paths), key, kind, build_sql)]
        PARTIAL_LOOKUPS.labels(kind, "merged_build").inc()
        merged = reader.runner.table(
            f"{kind}_merge", merge_sql[0], merge_sql[1], timeout_s=reader.limits.timeout_s,
            tables={"_p": pa.concat_tables(parts, promote_options="permissive")},
        )  # fmt: skip
        item = Consolidated.of(want, _polars_types(merged))
        if have is None or not want < have.files:
            # a query on an older snapshot must not replace a newer snapshot's entry (prefetched
            # before queries switched to it): the new snapshot's first query would rebuild it
            cache.put_merged(group, merged_key, item)
        out += item.rows_of(symbols)
    return out


def _cut_key(scan: Scan, key: Hashable) -> Hashable:
    """Partials of a scan cut at T (k2.query.asof) hold only part of a file: cached apart."""
    return key if scan.until_ms is None else (key, "until", scan.until_ms)


def _with_files(scan: Scan, files: list[str]) -> Scan:
    return replace(scan, files=files, groups=[])


def _polars_types(table: pa.Table) -> pa.Table:
    """The same Arrow types as per-file partials (they pass through Polars), so tables concatenate."""
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame.to_arrow()


def symbol_index(table: pa.Table) -> dict[str, tuple[int, int]]:
    """Row range [lo, hi) of each symbol in a table sorted by symbol.

    From the column's runs, in Arrow: a cache miss indexes a whole compacted file (200,000-360,000
    rows), and making a Python string of every row and sorting them took 120-270 ms of it.
    """
    if not table.num_rows:
        return {}
    try:
        runs = _runs(table.column("symbol"))
    except pa.ArrowNotImplementedError:  # a column type without run-end encoding
        return _symbol_index_unsorted(table)
    if runs is None or None in runs:
        return _symbol_index_unsorted(table)
    return {str(name): span for name, span in runs.items()}  # one run per symbol: the sorted case


def _runs(column: pa.ChunkedArray) -> dict[object, tuple[int, int]] | None:
    """Row range [lo, hi) of each value of a column whose equal values are adjacent, by its runs
    (run-end encoding, in Arrow); None when a value has more than one run (not grouped)."""
    runs = pc.run_end_encode(column.combine_chunks())
    names = runs.values.to_pylist()
    if len(set(names)) != len(names):
        return None
    ends = runs.run_ends.to_numpy().tolist()
    return dict(zip(names, zip([0, *ends[:-1]], ends, strict=True), strict=True))


def _symbol_index_unsorted(table: pa.Table) -> dict[str, tuple[int, int]]:
    """The former index, kept for a table whose symbols are not in runs (each symbol's first row on)."""
    index: dict[str, tuple[int, int]] = {}
    if table.num_rows:
        names, starts = np.unique(table.column("symbol").to_numpy(zero_copy_only=False), return_index=True)
        ordered = sorted(zip(starts.tolist(), names.tolist(), strict=True))
        for i, (lo, name) in enumerate(ordered):
            hi = ordered[i + 1][0] if i + 1 < len(ordered) else table.num_rows
            index[str(name)] = (lo, hi)
    return index


def split_by_file(table: pa.Table) -> tuple[dict[str, pa.Table], pa.Table]:
    """Pieces per file, and an empty piece; all through Polars so that their Arrow types agree."""
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    none = frame.clear().drop("filename").to_arrow()
    groups = frame.partition_by("filename", as_dict=True, include_key=False) if len(frame) else {}
    return {_local(str(name[0])): part.to_arrow() for name, part in groups.items()}, none
