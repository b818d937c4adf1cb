"""Snapshot planning without pyiceberg on the hot path: file lists cached per snapshot id.

A streaming table gains a snapshot every second or so. Planning each query from scratch reads
every manifest again (MEASURED.md: 437 ms after 200 commits), so this module keeps the live file
list of recent snapshots and derives a new snapshot's list from its parent's:

* an ``append`` snapshot only adds files: read the manifests that snapshot wrote and keep the
  entries it ADDED (a merged manifest also carries EXISTING entries; those are skipped);
* any other operation (``overwrite`` from compaction, ``replace``, ``delete``) falls back to one
  full ``plan_files`` of that snapshot, after which appends are incremental again.

The result for a snapshot is exactly pyiceberg's ``plan_files`` for it (a unit test checks this
after many appends); per-query pruning then happens on the cached ``FileSet``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from pyiceberg.catalog import Catalog
from pyiceberg.manifest import DataFileContent, ManifestContent, ManifestEntryStatus
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Operation, Snapshot

from k2.lake.tables import load_table
from k2.observability.logging import get_logger
from k2.observability.metrics import REGISTRY, Counter
from k2.query.errors import UnsupportedTableError
from k2.query.files import FileSet, Layout

__all__ = ["PLANS", "Prepare", "SnapshotPlanner", "TableSource"]

log = get_logger(__name__)

PLANS = Counter(
    "k2_query_plans_total",
    "File lists derived per snapshot, by how (cached, incremental, full)",
    ["table", "how"],
    registry=REGISTRY,
)
#: Beyond this many un-cached appends in a row a single full plan is cheaper than walking them.
_MAX_INCREMENTAL = 64


#: Called with (table name, freshly loaded table) before queries switch to a new snapshot.
Prepare = Callable[[str, Table], None]


class TableSource:
    """One Iceberg table, reloaded from the catalog at most every ``refresh_interval_s``.

    Loading the metadata costs more as snapshots accumulate, so with a positive interval a stale
    table is refreshed by a background thread while queries keep using the loaded one: a query
    never waits for a reload, and sees commits at most one interval (plus one reload) late. With
    an interval of 0 every access reloads synchronously (tests, one-shot CLI calls).

    With a ``prepare`` hook (prefetch on commit, ``k2.query.warmup``), a reload that finds a new
    snapshot first runs the hook on it, in the reloading thread, and only then publishes it: the
    hook's thread alone sees the staged table (``table()`` answers it there), so the work the first
    query of that snapshot would pay (its file list, its new rows) is done before any query reads it.

    With a watcher (``watch``: the warm-up thread reloads every table each interval and switches
    them together) queries start no reload of their own unless the watcher falls ``stale_after_s``
    behind. Before, a query that found the table older than the interval started a background
    reload between two of the watcher's: it published the new trades as soon as the watcher had
    prefetched them, while the watcher was still prefetching the quotes (or it prefetched the
    snapshot itself), so the first queries of the new snapshot shared the GIL and the CPUs with
    that prefetch: 80-330 ms instead of ~10 (the bars outlier of bench_cold).
    """

    def __init__(
        self,
        catalog: Catalog,
        namespace: str,
        name: str,
        refresh_interval_s: float = 1.0,
        prepare: Prepare | None = None,
    ) -> None:
        self.catalog, self.namespace, self.name = catalog, namespace, name
        self.refresh_interval_s = refresh_interval_s
        self.prepare = prepare
        self._table: Table | None = None
        self._loaded_at = 0.0
        self._lock = threading.Lock()
        self._publish_lock = threading.Lock()
        self._refreshing = False
        self._staged = threading.local()
        self._ready: int | None = None  # the last snapshot prepared
        self._watched: float | None = None  # with a watcher: the age at which queries reload anyway

    def table(self) -> Table:
        """The table as last loaded (loading it now if never loaded or the interval is 0).

        Raises:
            TableMissingError: the table does not exist (run ``k2 lake init``).
        """
        staged: Table | None = getattr(self._staged, "table", None)
        if staged is not None:  # the prepare hook, warming a snapshot not yet published
            return staged
        table = self._table
        if table is None or self.refresh_interval_s <= 0:
            return self.refresh()
        limit = self.refresh_interval_s if self._watched is None else self._watched
        if time.monotonic() - self._loaded_at >= limit:
            self._refresh_in_background()
        return table

    def watch(self, stale_after_s: float | None) -> None:
        """A watcher reloads this table now (``stage``/``publish``): queries reload it only when it
        is ``stale_after_s`` old (the watcher stalled); None: queries reload it again."""
        self._watched = stale_after_s

    @property
    def published(self) -> Table | None:
        """The table queries read now (None before the first load)."""
        return self._table

    def refresh(self) -> Table:
        """Reload now, prepare a new snapshot (with a hook), publish it, and return it."""
        with self._publish_lock:  # one reload publishes at a time, never an older one after a newer
            return self._publish(self._prepared(load_table(self.catalog, self.namespace, self.name)))

    def stage(self) -> Table:
        """Reload and prepare, without publishing: ``publish`` it later (tables switched together)."""
        with self._publish_lock:
            table = load_table(self.catalog, self.namespace, self.name)
            with self._lock:  # just checked
                self._loaded_at = time.monotonic()
            return self._prepared(table)

    def publish(self, table: Table) -> Table:
        """Switch queries to a staged table (unless a newer one was published meanwhile)."""
        with self._publish_lock:
            return self._publish(self._prepared(table))

    def _prepared(self, table: Table) -> Table:
        current = self._table
        if current is not None and _version(table) < _version(current):
            return current
        if self.prepare is not None and _head(table) != _head(current) and _head(table) != self._ready:
            self._staged.table = table
            try:
                self.prepare(self.name, table)
                self._ready = _head(table)
            except Exception as exc:  # queries then pay it themselves; the answer stays exact
                log.warning("prefetch failed", table=self.name, error=str(exc))
            finally:
                self._staged.table = None
        return table

    def _publish(self, table: Table) -> Table:
        with self._lock:
            self._table, self._loaded_at = table, time.monotonic()
        return table

    def _refresh_in_background(self) -> None:
        with self._lock:
            if self._refreshing:
                return
            self._refreshing = True

        def run() -> None:
            try:
                self.refresh()
            except Exception as exc:  # the next query retries; the loaded table stays usable
                log.warning("table refresh failed", table=self.name, error=str(exc))
            finally:
                with self._lock:
                    self._refreshing = False

        threading.Thread(target=run, name=f"k2-refresh-{self.name}", daemon=True).start()


def _head(table: Table | None) -> int | None:
    snap = table.current_snapshot() if table is not None else None
    return snap.snapshot_id if snap is not None else None


def _version(table: Table) -> tuple[int, int]:
    """Metadata order: a later commit has a higher sequence number or a later update time."""
    return (getattr(table.metadata, "last_sequence_number", 0), table.metadata.last_updated_ms)


class SnapshotPlanner:
    """The live file list of any snapshot of one table, cached and derived incrementally."""

    def __init__(self, name: str, cache_size: int = 32) -> None:
        self.name = name
        self.cache_size = cache_size
        self._cache: OrderedDict[int, FileSet] = OrderedDict()
        self._lock = threading.Lock()
        self._layout_key: tuple[int, int] | None = None
        self._layout: Layout | None = None

    def files(self, table: Table, snapshot: Snapshot | None) -> FileSet:
        """The data files live in ``snapshot`` (empty for a table without snapshots).

        Raises:
            UnsupportedTableError: the snapshot references delete files (K2 never writes them).
        """
        if snapshot is None:
            return FileSet.empty()
        with self._lock:
            hit = self._cache.get(snapshot.snapshot_id)
            if hit is not None:
                self._cache.move_to_end(snapshot.snapshot_id)
                PLANS.labels(self.name, "cached").inc()
                return hit
            layout = self._layout_for(table)
            chain, base = self._appends_since_cached(table, snapshot)
            if base is not None:
                result = base
                for snap in reversed(chain):
                    result = result.concat(self._added(table, snap, layout), snap.snapshot_id)
                    self._remember(snap.snapshot_id, result)
                PLANS.labels(self.name, "incremental").inc()
            else:
                result = self._full(table, snapshot, layout)
                PLANS.labels(self.name, "full").inc()
            self._remember(snapshot.snapshot_id, result)
            return result

    def _appends_since_cached(
        self, table: Table, snapshot: Snapshot
    ) -> tuple[list[Snapshot], FileSet | None]:
        """Walk parents back to a cached snapshot through appends only.

        Returns the appends (newest first) and the cached base, or a None base when the walk hits
        a non-append, an expired parent or too many steps: then only a full plan is exact.
        """
        chain: list[Snapshot] = []
        cursor = snapshot
        while len(chain) <= _MAX_INCREMENTAL:
            cached = self._cache.get(cursor.snapshot_id)
            if cached is not None:
                return chain, cached
            if not _is_append(cursor):
                return chain, None
            chain.append(cursor)
            if cursor.parent_snapshot_id is None:
                # the first snapshot (appends all the way down), or one whose parent was expired:
                # expiry clears the child's parent id, so only the sequence number tells them apart
                return chain, FileSet.empty() if (cursor.sequence_number or 0) <= 1 else None
            parent = table.snapshot_by_id(cursor.parent_snapshot_id)
            if parent is None:  # expired parent: its files are unknown here
                return chain, None
            cursor = parent
        return chain, None

    def _remember(self, snapshot_id: int, files: FileSet) -> None:
        self._cache[snapshot_id] = files
        self._cache.move_to_end(snapshot_id)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _layout_for(self, table: Table) -> Layout:
        key = (table.metadata.current_schema_id, len(table.metadata.partition_specs))
        if self._layout is None or key != self._layout_key:
            self._layout, self._layout_key = Layout.of(table.schema(), table.specs()), key
        return self._layout

    def _added(self, table: Table, snapshot: Snapshot, layout: Layout) -> FileSet:
        """Files an append snapshot added: ADDED entries of the manifests it wrote."""
        files = []
        for manifest in snapshot.manifests(table.io):
            if manifest.added_snapshot_id != snapshot.snapshot_id or not manifest.has_added_files():
                continue
            if manifest.content != ManifestContent.DATA:
                raise UnsupportedTableError(
                    f"{self.name}: snapshot {snapshot.snapshot_id} has delete files; K2's engine reads "
                    "append/overwrite tables only (rewrite the table with `k2 lake compact`)",
                    table=self.name,
                )
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
                if entry.status == ManifestEntryStatus.ADDED and entry.snapshot_id == snapshot.snapshot_id:
                    files.append(entry.data_file)
        return FileSet.build(snapshot.snapshot_id, files, layout)

    def _full(self, table: Table, snapshot: Snapshot, layout: Layout) -> FileSet:
        started = time.perf_counter()
        tasks = list(table.scan(snapshot_id=snapshot.snapshot_id).plan_files())
        for task in tasks:
            if task.delete_files or task.file.content != DataFileContent.DATA:
                raise UnsupportedTableError(
                    f"{self.name}: snapshot {snapshot.snapshot_id} has delete files; K2's engine reads "
                    "append/overwrite tables only",
                    table=self.name,
                )
        log.debug("full plan", table=self.name, snapshot_id=snapshot.snapshot_id, files=len(tasks),
                  ms=round((time.perf_counter() - started) * 1000, 1))  # fmt: skip
        return FileSet.build(snapshot.snapshot_id, (t.file for t in tasks), layout)


def _is_append(snapshot: Snapshot) -> bool:
    return snapshot.summary is not None and snapshot.summary.operation == Operation.APPEND
