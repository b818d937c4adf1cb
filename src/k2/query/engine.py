"""``QueryEngine``: every K2 query over the Iceberg tables, for the API and the CLI.

The engine takes parsed, validated arguments (see ``k2.query.params``); the edges parse what
callers send. It keeps three caches, all safe under concurrent requests and all exact:

* the live file list per snapshot id, extended incrementally on appends (``planner``);
* per-file partial aggregates for bars and symbol statistics (``partials``);
* DuckDB's Parquet footer cache.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import polars as pl
import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from k2.config import Settings
from k2.lake.offsets import snapshot_offsets
from k2.lake.tables import TABLES
from k2.query import bars as bars_mod
from k2.query import joins, stats, ticks
from k2.query import replay as replay_mod
from k2.query.errors import InvalidParameterError
from k2.query.params import Order, TimeRange, TimeTravel
from k2.query.partials import PartialCache
from k2.query.reader import LakeReader, QueryLimits, Result
from k2.query.replay import ReplayStream
from k2.query.rows import DEFAULT_BYTES, DEFAULT_ROWS
from k2.query.runner import DuckRunner
from k2.query.stats import GapStatus, SessionRange
from k2.types import TICK_KINDS, StreamKind

__all__ = ["QueryEngine"]

_OFFSETS = pa.list_(pa.struct([("topic", pa.string()), ("partition", pa.int32()), ("offset", pa.int64())]))
SNAPSHOT_SCHEMA = pa.schema([
    ("snapshot_id", pa.int64()), ("parent_id", pa.int64()), ("committed_at", pa.timestamp("ms", "UTC")),
    ("operation", pa.string()), ("added_rows", pa.int64()), ("total_rows", pa.int64()),
    ("added_files", pa.int64()), ("offsets", _OFFSETS),
])  # fmt: skip


def _pending_reader(settings: Settings) -> Callable[[], pl.DataFrame]:
    """Reads the pending holes from the pipeline's sequence store, opened per call (read only)."""
    from k2.state.factory import namespace_state, open_sequence_store, state_dir
    from k2.state.pending import PENDING_SCHEMA, pending_holes

    redis, data_dir = namespace_state(settings)

    def read() -> pl.DataFrame:
        if settings.state.backend == "embedded" and not (state_dir(data_dir) / "sequence.sqlite").exists():
            return pl.DataFrame(schema=PENDING_SCHEMA)  # no pipeline ran here: do not create its file
        with open_sequence_store(settings.state, redis, data_dir) as store:
            return pending_holes(store, TICK_KINDS, settings.kafka.partitions)

    return read


class QueryEngine:
    """DuckDB over Iceberg snapshots, with planning and aggregate caches (thread-safe)."""

    def __init__(
        self,
        catalog: Catalog,
        namespace: str,
        limits: QueryLimits | None = None,
        *,
        refresh_interval_s: float = 1.0,
        threads: int | None = None,
        partial_rows: int = 4_000_000,
        row_cache_rows: int = DEFAULT_ROWS,
        row_cache_bytes: int = DEFAULT_BYTES,
        runner: DuckRunner | None = None,
        pending: Callable[[], pl.DataFrame] | None = None,
    ) -> None:
        self.pending = pending  # holes not yet recorded, from the sequence state (k2.state.pending)
        self.reader = LakeReader(
            catalog,
            namespace,
            limits or QueryLimits(),
            refresh_interval_s=refresh_interval_s,
            threads=threads,
            row_cache_rows=row_cache_rows,
            row_cache_bytes=row_cache_bytes,
            runner=runner,
        )
        self.partials = PartialCache(partial_rows)

    @classmethod
    def from_settings(
        cls, settings: Settings, *, catalog: Catalog | None = None, refresh_interval_s: float = 1.0
    ) -> QueryEngine:
        """An engine over the configured catalog, with the API's caps and timeout.

        Raises:
            CatalogError: the catalog cannot be opened.
        """
        if catalog is None:
            from k2.lake.catalog import open_catalog

            catalog = open_catalog(settings)
        spill = settings.data_dir / "duckdb-tmp"
        runner = DuckRunner(
            memory_limit=settings.api.duckdb_memory_limit,
            temp_directory=str(spill),
            max_concurrent=settings.api.max_concurrent_queries,
        )
        return cls(
            catalog, settings.lake.namespace, QueryLimits.from_settings(settings.api),
            refresh_interval_s=refresh_interval_s, runner=runner, pending=_pending_reader(settings),
            row_cache_rows=settings.api.row_cache_rows, row_cache_bytes=settings.api.row_cache_mb << 20,
        )  # fmt: skip

    def with_limits(self, limits: QueryLimits) -> QueryEngine:
        """This engine (same caches, same DuckDB) answering under other caps and timeout."""
        view = copy.copy(self)
        view.reader = self.reader.with_limits(limits)
        return view

    @property
    def limits(self) -> QueryLimits:
        return self.reader.limits

    @property
    def catalog(self) -> Catalog:
        """The Iceberg catalog this engine reads."""
        return self.reader.catalog

    def current_table(self, name: str) -> Table:
        """``name`` as this engine's queries read it now (reloaded at most every ``refresh_interval_s``).

        A caller that pairs a snapshot with what it covers (the hybrid engine's boundary) takes both
        from this one table object.

        Raises:
            TableMissingError: the table does not exist.
        """
        return self.reader.source(name).table()

    def refresh(self) -> None:
        """See every commit made so far (otherwise tables reload every ``refresh_interval_s``)."""
        self.reader.refresh()

    def close(self) -> None:
        self.reader.runner.close()

    def window(self, start: str | datetime | None, end: str | datetime | None) -> TimeRange:
        """Parse a window under this engine's range cap (see ``TimeRange.parse``)."""
        return TimeRange.parse(start, end, max_days=self.limits.max_range_days)

    def ticks(
        self,
        kind: StreamKind,
        symbols: tuple[str, ...],
        window: TimeRange,
        *,
        order: Order = "asc",
        limit: int = 1000,
        cursor: str | None = None,
        travel: TimeTravel = TimeTravel(),
    ) -> Result:
        """Trades or quotes, one page (see ``k2.query.ticks.ticks``)."""
        return ticks.ticks(
            self.reader, kind, symbols, window, order=order, limit=limit, cursor=cursor, travel=travel
        )

    def bars(
        self,
        symbols: tuple[str, ...],
        window: TimeRange,
        interval_us: int,
        *,
        tz: str | None = None,
        travel: TimeTravel = TimeTravel(),
    ) -> Result:
        """OHLCV/VWAP bars (see ``k2.query.bars``)."""
        return bars_mod.bars(self.reader, self.partials, symbols, window, interval_us, tz=tz, travel=travel)

    def trades_with_quotes(
        self,
        symbols: tuple[str, ...],
        window: TimeRange,
        tolerance_us: int,
        *,
        travel: TimeTravel = TimeTravel(),
    ) -> Result:
        """Each trade with its prevailing quote (see ``k2.query.joins``)."""
        return joins.trades_with_quotes(self.reader, symbols, window, tolerance_us, travel=travel)

    def latest(self, symbols: tuple[str, ...], *, travel: TimeTravel = TimeTravel()) -> Result:
        """The last trade and quote per symbol (see ``k2.query.ticks.latest``)."""
        return ticks.latest(self.reader, symbols, travel)

    def newest_us(
        self, kind: StreamKind, symbols: tuple[str, ...], *, travel: TimeTravel = TimeTravel()
    ) -> int | None:
        """The newest exchange time of ``symbols`` in one table, epoch µs (see ``k2.query.ticks``)."""
        return ticks.newest_us(self.reader, kind, symbols, travel)

    def replay(
        self,
        kinds: tuple[StreamKind, ...],
        symbols: tuple[str, ...],
        window: TimeRange,
        *,
        speed: float | None = None,
        travel: TimeTravel = TimeTravel(),
        batch_rows: int = 5_000,
    ) -> ReplayStream:
        """A streamed, optionally paced replay (see ``k2.query.replay``)."""
        return replay_mod.replay(
            self.reader, kinds, symbols, window, speed=speed, travel=travel, batch_rows=batch_rows
        )

    def symbols(
        self, symbols: tuple[str, ...], sessions: SessionRange, *, travel: TimeTravel = TimeTravel()
    ) -> Result:
        """Rows, first/last time and gaps per symbol and session (see ``k2.query.stats``)."""
        return stats.symbol_days(self.reader, self.partials, symbols, sessions, travel=travel)

    def gaps(
        self,
        symbols: tuple[str, ...],
        sessions: SessionRange,
        *,
        kind: StreamKind | None = None,
        status: GapStatus = "all",
        travel: TimeTravel = TimeTravel(),
    ) -> Result:
        """Sequence gaps and their state, pending holes included (see ``k2.query.stats.gaps``)."""
        pending = self.pending() if self.pending is not None and status in ("pending", "all") else None
        return stats.gaps(
            self.reader, symbols, sessions, kind=kind, status=status, travel=travel, pending=pending
        )

    def gap_counts(self, *, limit: int = 20) -> list[dict[str, Any]]:
        """Gaps opened, recovered and pending per symbol, most first (see ``k2.query.stats.gap_counts``)."""
        return stats.gap_counts(
            self.reader, self.pending() if self.pending is not None else None, limit=limit
        )

    def snapshots(self, table: str, *, limit: int = 50) -> Result:
        """Snapshots newest first: commit time, operation, rows added and Kafka offsets covered.

        Raises:
            InvalidParameterError: an unknown table.
            CapExceededError: limit above ``max_rows``.
        """
        if table not in TABLES:
            raise InvalidParameterError(
                "table", f"{table[:40]!r} is not a table; use one of {', '.join(TABLES)}"
            )
        self.limits.check_limit(limit)
        source = self.reader.source(table)
        loaded = source.refresh()
        rows = []
        for snap in sorted(loaded.snapshots(), key=lambda s: s.timestamp_ms, reverse=True)[:limit]:
            extra = snap.summary.additional_properties if snap.summary else {}
            offsets = snapshot_offsets(loaded, snap)
            rows.append({
                "snapshot_id": snap.snapshot_id,
                "parent_id": snap.parent_snapshot_id,
                "committed_at": datetime.fromtimestamp(snap.timestamp_ms / 1000, UTC),
                "operation": snap.summary.operation.value if snap.summary else None,
                "added_rows": int(extra.get("added-records", 0)),
                "total_rows": int(extra["total-records"]) if "total-records" in extra else None,
                "added_files": int(extra.get("added-data-files", 0)),
                "offsets": [{"topic": t, "partition": p, "offset": o} for (t, p), o in sorted(offsets.items())],
            })  # fmt: skip
        current = loaded.current_snapshot()
        return Result(
            pa.Table.from_pylist(rows, schema=SNAPSHOT_SCHEMA),
            {table: current.snapshot_id if current else None},
        )
