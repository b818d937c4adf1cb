"""Warm-up at start and prefetch on commit, so that no query pays what a cold engine pays.

Profiled on the ASX sample streamed in 50 commits per table, the first query of a fresh
``k2 serve`` took 0.4-2.4 s against 2-10 ms for the next: a full plan of each table (every
manifest read, ~0.5 s each), then decoding the window's files into the hot-row cache, computing
the day's bar partials, and DuckDB's and the encoders' first statements. After a commit the first
query of the new snapshot again paid its manifests and the decoding of the new file.

* ``Prefetcher`` is the engine's ``prepare`` hook (``k2.query.planner.TableSource``): for a new
  snapshot it derives the file list, decodes the files the snapshot added (at start: the newest
  files) into the hot-row cache and computes the 1-minute bar partials of the partitions they
  touched; the snapshot is published to queries only afterwards.
* ``Warmer`` is a thread the API starts with the app: it opens the engine (retrying while the
  catalog is down), loads each table (running the prefetcher), runs each query kind once, then
  says ready; after that it reloads the tables every interval, so a commit is prefetched even
  while no query comes, and publishes them only once all are prefetched. Meanwhile queries start
  no reload of their own (``TableSource.watch``): one would publish a table while the watcher
  still prefetches the other, and the first queries of the new snapshot would share the machine
  with that prefetch (the 80-330 ms outliers of bars after a commit in bench_cold). Before ready it also
  warms the app's hybrid engine (the live routes: ``/v1/trades/recent``, ``/v1/bars/live``...):
  its Kafka clients, the tails of the partitions that fit a quarter of the tail cache, and one
  query of each live kind; /ready reports it under ``hybrid`` (a Kafka outage does not hold
  ready: the history is served, and the first live query sets up what is missing).

Memory: warm-up holds nothing of its own. It fills the engine's bounded caches: at most
``warm_rows`` decoded rows in all (never more than half the hot-row cache), bar partials within
the partial cache's bound, and the file lists the planner keeps (32 snapshots per table).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
from pyiceberg.table import Table

from k2.observability.logging import get_logger
from k2.query import bars as bars_mod
from k2.query.files import FileSet
from k2.query.formats import encode
from k2.query.params import TimeRange
from k2.query.rows import prefetch
from k2.types import StreamKind

if TYPE_CHECKING:
    import pyarrow as pa

    from k2.query.engine import QueryEngine

__all__ = ["BAR_INTERVAL_US", "Prefetcher", "TableWarmth", "WarmSet", "Warmer", "enable_prefetch"]

log = get_logger(__name__)

#: The bar length prefetch computes partials for (the API's common case, issue #17's goal).
BAR_INTERVAL_US = 60_000_000
_TABLES = ("trades", "quotes")


class LiveResult(Protocol):
    """What warm-up encodes of a live answer (``k2.hybrid.HybridResult``)."""

    def table(self) -> pa.Table: ...

    def meta(self) -> dict[str, Any]: ...


class LiveEngine(Protocol):
    """The part of the live routes' engine (``k2.hybrid.HybridEngine``, a layer above this one)
    that warm-up drives: typed here so that the query layer does not import the hybrid one."""

    def warm(self, max_rows: int | None = None) -> dict[str, int]: ...

    def recent(self, kind: StreamKind, symbols: tuple[str, ...], minutes: float) -> LiveResult: ...

    def live_bars(self, symbols: tuple[str, ...], interval_us: int, minutes: float) -> LiveResult: ...


@dataclass
class TableWarmth:
    """What prefetch did for one table, for /ready and the tests."""

    snapshot_id: int | None = None
    files: int = 0
    rows_loaded: int = 0
    partitions_warmed: int = 0
    prepared: int = 0  # snapshots prepared so far
    last_ms: float = 0.0


class WarmSet:
    """The files prefetch put in the hot-row cache for one table, oldest first, within its budget.

    Each snapshot's prefetch loads its new files (the newest data within the budget); before, those
    of every earlier snapshot stayed until the cache's LRU bound (2,000,000 rows by default) pushed
    them out, so the hot set grew with every commit by the rows it committed (issue #17: the
    server's RSS grew with the commits of the soak). ``hold`` records a snapshot's prefetched files
    and answers the oldest ones beyond the budget, for the caller to drop from the cache: prefetch
    keeps at most ``budget`` rows per table, as the module says. A query that needs a dropped file
    loads it again (then the cache's LRU owns it).
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._files: OrderedDict[str, int] = OrderedDict()  # path -> rows, oldest first
        self._rows = 0

    def hold(self, newest: FileSet, gone: set[str] | frozenset[str] = frozenset()) -> set[str]:
        """Record ``newest`` (just prefetched) and forget ``gone``; the paths now beyond the budget."""
        for path in gone:
            self._rows -= self._files.pop(path, 0)
        order = np.argsort(newest.ts_max, kind="stable")  # older data first within one snapshot
        for path, rows in zip(newest.paths[order].tolist(), newest.records[order].tolist(), strict=True):
            self._rows += int(rows) - self._files.pop(path, 0)
            self._files[path] = int(rows)
        dropped: set[str] = set()
        while self._rows > self.budget and self._files:
            path, rows = self._files.popitem(last=False)
            self._rows -= rows
            dropped.add(path)
        return dropped

    @property
    def rows(self) -> int:
        return self._rows

    def __len__(self) -> int:
        return len(self._files)


class Prefetcher:
    """Loads what a new snapshot's first query needs, before queries switch to it (thread-safe)."""

    def __init__(self, engine: QueryEngine, warm_rows: int, tables: tuple[str, ...] = _TABLES) -> None:
        self.engine = engine
        reader = engine.reader
        self.budget = min(warm_rows, reader.rows.capacity_rows() // 2) // max(len(tables), 1)
        self.tables: dict[str, TableWarmth] = {name: TableWarmth() for name in tables}
        self._seen: dict[str, set[str]] = {}
        self._before: dict[str, set[str]] = {}  # the files of the snapshot before the last one
        self._warm: dict[str, WarmSet] = {name: WarmSet(self.budget) for name in tables}
        self._lock = threading.Lock()

    def __call__(self, name: str, table: Table) -> None:
        if name not in self.tables:
            return
        started = time.perf_counter()
        reader = self.engine.reader
        snap = table.current_snapshot()
        files = reader.fileset(name, table, snap)  # the manifests, read once here
        with self._lock:
            seen = self._seen.get(name)
        fresh = files if seen is None else files.without(seen, files.snapshot_id)
        newest = newest_within(fresh, self.budget)
        loaded = prefetch(reader, name, newest.paths.tolist())
        partitions = 0
        if name == "trades" and len(newest) and snap is not None:
            touched = set(newest.groups())
            keep = np.array([g in touched for g in files.groups()], dtype=bool)
            part = files.subset(keep)
            scan = reader.make_scan(name, table, snap, part.paths.tolist(), part.groups())
            bars_mod.warm_partitions(reader, self.engine.partials, scan, BAR_INTERVAL_US)
            partitions = len(touched)
        live = files.path_set()
        with self._lock:
            before = self._before.get(name, set())
            self._before[name], self._seen[name] = seen or set(), live
        # Files compacted away two snapshots ago: queries of the published snapshot no longer read
        # them, so their decoded rows and partials go now rather than when the LRU bounds force it
        # (they filled the caches, the soak's growing RSS). A time-travel query re-reads them.
        gone = before - (seen or set()) - live
        with self._lock:
            # prefetched files beyond the budget (older data): they would stay until the LRU bound
            stale = self._warm[name].hold(newest, gone)
        if gone:
            reader.rows.discard(gone)
            reader.parquet.forget(gone)
        if stale:
            reader.rows.discard(stale, whole_only=True)
        if gone:
            self.engine.partials.discard(gone)
        with self._lock:
            state = self.tables[name]
            state.snapshot_id = snap.snapshot_id if snap is not None else None
            state.files, state.prepared = len(files), state.prepared + 1
            state.rows_loaded += loaded
            state.partitions_warmed += partitions
            state.last_ms = round((time.perf_counter() - started) * 1000, 1)
        log.debug("prefetched", table=name, snapshot_id=state.snapshot_id, new_files=len(fresh),
                  rows=loaded, ms=state.last_ms)  # fmt: skip

    def prepared(self, name: str) -> bool:
        with self._lock:
            return name in self._seen


def newest_within(files: FileSet, budget_rows: int) -> FileSet:
    """The files with the latest data whose rows together fit ``budget_rows`` (newest first)."""
    if not len(files) or budget_rows <= 0:
        return files.subset(np.zeros(len(files), dtype=bool))
    order = np.argsort(-files.ts_max, kind="stable")
    within = order[np.cumsum(files.records[order]) <= budget_rows]
    mask = np.zeros(len(files), dtype=bool)
    mask[within] = True
    return files.subset(mask)


def enable_prefetch(engine: QueryEngine, warm_rows: int) -> Prefetcher:
    """Install a ``Prefetcher`` as the engine's hook for every new snapshot; returns it."""
    hook = Prefetcher(engine, warm_rows)
    engine.reader.set_prepare(hook)
    return hook


Status = Literal["starting", "warming", "retrying", "ready", "stopped"]


@dataclass
class Warmer:
    """Warm-up at start (then ready), and a watcher that prefetches each commit (a daemon thread)."""

    engine: Callable[[], QueryEngine]
    warm_rows: int = 1_000_000
    #: The app's hybrid engine (the live routes'), warmed after the history: None leaves it cold.
    hybrid: Callable[[], LiveEngine] | None = None
    interval_s: float = 1.0
    retry_s: float = 2.0
    status: Status = "starting"
    error: str | None = None
    ready_s: float | None = None
    prefetcher: Prefetcher | None = None
    live: dict[str, Any] = field(default_factory=lambda: {"status": "off"})
    _started: float = field(default_factory=time.monotonic)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        return self.status == "ready"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="k2-warmup", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self.status = "stopped"

    def wait(self, timeout_s: float) -> bool:
        """Block until ready (tests, the CLI); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while not self.ready and time.monotonic() < deadline and not self._stop.is_set():
            time.sleep(0.02)
        return self.ready

    def describe(self) -> dict[str, Any]:
        """The warm-up state as /ready reports it."""
        out: dict[str, Any] = {"status": self.status}
        if self.ready_s is not None:
            out["ready_after_s"] = round(self.ready_s, 3)
        if self.error:
            out["error"] = self.error
        if self.prefetcher is not None:
            out["tables"] = {k: vars(v).copy() for k, v in self.prefetcher.tables.items()}
        out["hybrid"] = dict(self.live)
        return out

    def _run(self) -> None:
        engine = self._warm_up()
        if engine is None:
            return
        sources = [engine.reader.source(name) for name in _TABLES]
        for source in sources:  # this thread reloads them now; queries only if it stalls
            source.watch(max(10 * self.interval_s, 10.0))
        try:
            self._watch(engine)
        finally:
            for source in sources:
                source.watch(None)

    def _watch(self, engine: QueryEngine) -> None:
        while not self._stop.wait(self.interval_s):
            # Reload and prefetch every table, then switch them together: a query that sees the new
            # trades snapshot never shares the machine with the quotes' prefetch.
            staged = []
            for name in _TABLES:
                source = engine.reader.source(name)
                try:
                    staged.append((source, source.stage()))
                except Exception as exc:  # a catalog hiccup: queries keep the loaded table
                    log.warning("table watch failed", table=name, error=str(exc))
            for source, table in staged:
                source.publish(table)

    def _warm_up(self) -> QueryEngine | None:
        while not self._stop.is_set():
            self.status = "warming"
            try:
                engine = self.engine()
                hook = self.prefetcher = self.prefetcher or enable_prefetch(engine, self.warm_rows)
                for name in _TABLES:
                    table = engine.reader.source(name).refresh()  # runs the hook on a new head
                    if not hook.prepared(name):  # loaded by a query before the hook was set
                        hook(name, table)
                symbol = exercise(engine)
            except Exception as exc:  # catalog down, tables not created yet: try again
                self.status, self.error = "retrying", f"{type(exc).__name__}: {str(exc)[:200]}"
                log.warning("warm-up failed; retrying", error=self.error)
                self._stop.wait(self.retry_s)
                continue
            self._warm_hybrid(symbol)
            self.status, self.error = "ready", None
            self.ready_s = time.monotonic() - self._started
            log.info("warm", seconds=round(self.ready_s, 3))
            return engine
        return None

    def _warm_hybrid(self, symbol: str | None) -> None:
        """The live routes' first-use costs, paid once before ready (a failure does not hold it).

        ``HybridEngine.warm`` builds the Kafka clients and reads the short tails into the cache;
        then each live query kind runs once on ``symbol`` and is encoded. When Kafka does not
        answer (bounded by the clients' timeouts, a few seconds), the history is served anyway:
        /ready says so under ``hybrid`` and the first live query sets up what is missing.
        """
        if self.hybrid is None:
            return
        started = time.perf_counter()
        self.live = {"status": "warming"}
        try:
            live = self.hybrid()
            state: dict[str, Any] = {"status": "warming", **live.warm()}
            if symbol is not None:
                symbols = (symbol,)
                kinds: tuple[StreamKind, ...] = ("trades", "quotes")
                results = [live.recent(kind, symbols, 15.0) for kind in kinds]
                results.append(live.live_bars(symbols, BAR_INTERVAL_US, 15.0))
                for result in results:
                    for fmt in ("json", "arrow"):
                        encode(result.table(), fmt, result.meta())
            state["status"] = "ready"
        except Exception as exc:  # Kafka down: history is served; live queries set up on first use
            state = {"status": "failed", "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
            log.warning("hybrid warm-up failed; live queries will set up on first use", error=state["error"])
        state["ms"] = round((time.perf_counter() - started) * 1000, 1)
        self.live = state
        log.info("hybrid warm", **state)


def exercise(engine: QueryEngine) -> str | None:
    """Run each query kind once on the newest data and encode it: DuckDB's first statements,
    lazy imports and encoder set-up are paid here, not by a client. Returns the symbol used
    (None: no data yet)."""
    files = engine.reader.fileset("trades", *_head(engine, "trades"))
    if not len(files):
        return None
    newest = int(np.argmax(files.ts_max))
    symbol = str(files.sym_min[newest])
    end = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(files.ts_max[newest]) + 1)
    window = TimeRange(end - timedelta(minutes=15), end)
    day = TimeRange(end - timedelta(days=1), end)
    limit = min(1000, engine.limits.max_rows)
    queries: list[Callable[[], Any]] = [
        lambda: engine.ticks("trades", (symbol,), window, limit=limit),
        lambda: engine.ticks("quotes", (symbol,), window, limit=limit),
        lambda: engine.bars((symbol,), day, BAR_INTERVAL_US),
        lambda: engine.trades_with_quotes((symbol,), window, 300_000_000),
    ]
    for query in queries:
        try:
            result = query()
            for fmt in ("json", "arrow"):
                encode(result.table, fmt, {"snapshots": {}})
        except Exception as exc:  # a capped or odd window: the warm-up of the others still counts
            log.info("warm-up query skipped", error=f"{type(exc).__name__}: {str(exc)[:200]}")
    return symbol


def _head(engine: QueryEngine, name: str) -> tuple[Table, Any]:
    table = engine.reader.source(name).table()
    return table, table.current_snapshot()
