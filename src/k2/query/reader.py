"""The engine's core: resolve a table state (time travel), pick its files, hand them to DuckDB.

``LakeReader`` owns one ``TableSource`` and one ``SnapshotPlanner`` per table, the DuckDB runner
and the limits. Each query module (ticks, bars, joins, replay, stats) asks it for a ``Scan`` (the
pruned file list of one table at one snapshot) and turns that into parameterised SQL.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

from k2.config import ApiSettings
from k2.query.asof import AsOf, resolve_as_of
from k2.query.errors import CapExceededError, InvalidParameterError, SnapshotNotFoundError
from k2.query.files import FileSet, Prune
from k2.query.params import TimeTravel
from k2.query.parquet import DataFiles
from k2.query.planner import Prepare, SnapshotPlanner, TableSource
from k2.query.rows import DEFAULT_BYTES, DEFAULT_ROWS, RowCache
from k2.query.runner import DuckRunner
from k2.query.sql import cut_relation
from k2.query.storage import S3ArrowFileSystem, warehouse_filesystem

__all__ = ["LakeReader", "QueryLimits", "Result", "Scan"]


@dataclass(frozen=True)
class QueryLimits:
    """Caps every query obeys; the API takes them from ``ApiSettings``."""

    max_rows: int = 100_000
    max_range_days: float = 31
    timeout_s: float | None = 10.0

    @classmethod
    def from_settings(cls, api: ApiSettings) -> QueryLimits:
        return cls(api.max_rows, api.max_range_days, api.query_timeout_s)

    def check_limit(self, limit: int) -> int:
        """Raises:
        InvalidParameterError: limit below 1.
        CapExceededError: limit above ``max_rows``.
        """
        if limit < 1:
            raise InvalidParameterError("limit", f"{limit} is not a positive number of rows")
        if limit > self.max_rows:
            raise CapExceededError(
                f"limit {limit} exceeds the cap of {self.max_rows} rows per request (api.max_rows); "
                "page with the cursor instead",
                cap="api.max_rows",
                limit=self.max_rows,
                requested=limit,
            )
        return limit

    def check_rows(self, table: pa.Table, what: str) -> pa.Table:
        """Raises:
        CapExceededError: the result has more rows than ``max_rows``.
        """
        if table.num_rows > self.max_rows:
            raise CapExceededError(
                f"the {what} result has more than {self.max_rows} rows (api.max_rows); "
                "narrow the time range or the symbols, or use a coarser interval",
                cap="api.max_rows",
                limit=self.max_rows,
            )
        return table


@dataclass(frozen=True)
class Scan:
    """The files of one table at one snapshot that a query must read."""

    table: str
    snapshot_id: int | None
    committed_at: datetime | None
    files: list[str]
    schema: pa.Schema
    #: (spec id, day, bucket) per file, for per-partition caches.
    groups: list[tuple[int, int, int]] = field(default_factory=list)
    #: Row count per file (from the manifests).
    records: dict[str, int] = field(default_factory=dict)
    #: "As of T" past the dense window: only rows committed at or before this ms (k2.query.asof).
    until_ms: int | None = None

    def source(self, params: list[Any], tables: dict[str, pa.Table], alias: str) -> str:
        """A FROM item reading these files; an empty scan reads an empty table of the same schema.

        The file list is bound as a parameter too, so even a path with a quote cannot break out.
        """
        if not self.files:
            tables[f"_empty_{alias}"] = self.schema.empty_table()
            return f"_empty_{alias}"
        params.append(self.files)
        if self.until_ms is None:
            return "read_parquet(?)"
        params.append(self.until_ms)
        return cut_relation("read_parquet(?)")


@dataclass
class Result:
    """A query's rows and the table states they were read from."""

    table: pa.Table
    snapshots: dict[str, int | None] = field(default_factory=dict)
    next_cursor: str | None = None


class LakeReader:
    """Tables, planners and the DuckDB runner shared by all queries of one engine."""

    def __init__(
        self,
        catalog: Catalog,
        namespace: str,
        limits: QueryLimits,
        *,
        refresh_interval_s: float = 1.0,
        threads: int | None = None,
        row_cache_rows: int = DEFAULT_ROWS,
        row_cache_bytes: int = DEFAULT_BYTES,
        runner: DuckRunner | None = None,
    ) -> None:
        self.catalog, self.namespace, self.limits = catalog, namespace, limits
        self.refresh_interval_s = refresh_interval_s
        self.runner = runner or DuckRunner(threads=threads)
        filesystem = warehouse_filesystem(catalog.properties)
        if filesystem is not None:  # a warehouse on S3: DuckDB reads it through the FileIO's filesystem
            self.runner.register_filesystem(S3ArrowFileSystem(filesystem))
        #: The hot-row cache's cold reads (pyarrow, footers kept).
        self.parquet = DataFiles(filesystem)
        self.rows = RowCache(row_cache_rows, max_bytes=row_cache_bytes)
        self._sources: dict[str, TableSource] = {}
        self._schemas: dict[tuple[str, int], pa.Schema] = {}
        self._planners: dict[str, SnapshotPlanner] = {}
        self._lock = threading.Lock()
        #: Run on each new snapshot before queries read it (``k2.query.warmup``); set before first use.
        self.prepare: Prepare | None = None

    def with_limits(self, limits: QueryLimits) -> LakeReader:
        """The same tables, caches and DuckDB database under other limits (a shallow view)."""
        view = copy.copy(self)
        view.limits = limits
        return view

    def source(self, name: str) -> TableSource:
        with self._lock:
            if name not in self._sources:
                self._sources[name] = TableSource(
                    self.catalog, self.namespace, name, self.refresh_interval_s, self.prepare
                )
                self._planners[name] = SnapshotPlanner(name)
            return self._sources[name]

    def set_prepare(self, prepare: Prepare | None) -> None:
        """Run ``prepare`` on every new snapshot before queries read it, from now on (all tables)."""
        with self._lock:
            self.prepare = prepare
            for source in self._sources.values():
                source.prepare = prepare

    def refresh(self) -> None:
        """Reload every table now (after a known commit, in tests and the CLI)."""
        for source in list(self._sources.values()):
            source.refresh()

    def snapshot(self, name: str, travel: TimeTravel) -> tuple[Table, Snapshot | None]:
        """The table and the snapshot a query reads whole; see ``state`` for "as of T".

        Raises:
            TableMissingError, SnapshotNotFoundError: see ``state``.
        """
        table, state = self.state(name, travel)
        if state.until_ms is not None:
            raise SnapshotNotFoundError(
                f"{name} as of {travel.as_of} is no longer a kept snapshot", table=name,
                as_of=travel.as_of.isoformat() if travel.as_of else None,
            )  # fmt: skip
        return table, state.snapshot

    def state(self, name: str, travel: TimeTravel) -> tuple[Table, AsOf]:
        """The table, the snapshot a query reads, and the cut "as of T" needs (k2.query.asof).

        Raises:
            TableMissingError: the table was never created.
            SnapshotNotFoundError: the snapshot id is unknown or expired, or no exact state as of
                the time is kept.
        """
        source = self.source(name)
        table = source.table()
        if travel.snapshot_id is not None:
            snap = table.snapshot_by_id(travel.snapshot_id)
            if snap is None:  # maybe committed since the last reload
                table = source.refresh()
                snap = table.snapshot_by_id(travel.snapshot_id)
            if snap is None:
                raise SnapshotNotFoundError(
                    f"{name} has no snapshot {travel.snapshot_id} (never existed, or expired); "
                    "list them at /v1/snapshots",
                    table=name,
                    snapshot_id=travel.snapshot_id,
                )
            return table, AsOf(snap)
        if travel.as_of is not None:
            return table, resolve_as_of(table, name, travel.as_of)
        return table, AsOf(table.current_snapshot())

    def fileset(self, name: str, table: Table, snapshot: Snapshot | None) -> FileSet:
        self.source(name)
        return self._planners[name].files(table, snapshot)

    def scan(self, name: str, travel: TimeTravel, prune: Prune) -> Scan:
        """Resolve the snapshot and prune its cached file list for one query."""
        table, state = self.state(name, travel)
        files = self.fileset(name, table, state.snapshot).select(prune)
        scan = self.make_scan(
            name, table, state.snapshot, files.paths.tolist(), files.groups(), state.until_ms
        )
        scan.records.update(zip(scan.files, files.records.tolist(), strict=True))
        return scan

    def make_scan(
        self,
        name: str,
        table: Table,
        snap: Snapshot | None,
        files: list[str],
        groups: list[tuple[int, int, int]] | None = None,
        until_ms: int | None = None,
    ) -> Scan:
        """A cut scan (``until_ms``) reports T as its commit time: it holds the state of T."""
        return Scan(
            name,
            snap.snapshot_id if snap else None,
            _ms(until_ms if until_ms is not None else snap.timestamp_ms) if snap else None,
            files,
            self._arrow_schema(name, table),
            groups or [],
            until_ms=until_ms,
        )

    def _arrow_schema(self, name: str, table: Table) -> pa.Schema:
        """The table's Arrow schema, converted once per schema id (it is on every query's path)."""
        key = (name, table.metadata.current_schema_id)
        schema = self._schemas.get(key)
        if schema is None:
            schema = self._schemas[key] = table.schema().as_arrow()
        return schema

    def travel_for_second_table(self, first: Scan, travel: TimeTravel) -> TimeTravel:
        """The second table of a join read as the platform knew it when the first was committed."""
        if travel.snapshot_id is None:
            return travel
        return TimeTravel(as_of=first.committed_at or datetime(1970, 1, 2, tzinfo=UTC))


def _ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
