"""Table maintenance on a schedule, run by ``k2 ingest`` (``lake.maintain_every_s``, on by default).

It runs on the pipeline's commit worker, between two commits, so it never races the pipeline's
own appends; against other writers every operation is a compare-and-set like any commit.
"""

from __future__ import annotations

import time
from datetime import timedelta

from pyiceberg.table import Table

from k2.config import LakeSettings
from k2.lake import maintenance as mx
from k2.lake.retention import retain
from k2.lake.tables import maintained_properties
from k2.observability.logging import get_logger
from k2.observability.metrics import REGISTRY, Gauge, Histogram

__all__ = ["Upkeep"]

log = get_logger(__name__)
_MANIFESTS = 10

DATA_FILES = Gauge("k2_lake_data_files", "Data files in the current snapshot", ["table"], registry=REGISTRY)
FILES_PER_PARTITION = Gauge(
    "k2_lake_files_per_partition_max", "Most data files in one partition", ["table"], registry=REGISTRY
)
UPKEEP_SECONDS = Histogram(
    "k2_lake_maintenance_seconds", "One maintenance pass over a table", ["table"], registry=REGISTRY,
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)  # fmt: skip


class Upkeep:
    """One bounded maintenance pass per table every ``lake.maintain_every_s`` seconds.

    A pass, per table, each step its own commit that keeps the table head's offsets:
    1. bring the table's properties up to date (old metadata.json files deleted after commits);
    2. compact small files by size tier, within ``compact_budget_mb`` (k2.lake.maintenance);
    3. tag a checkpoint when due, thin old ones, expire the rest (k2.lake.retention);
    4. merge manifests when a snapshot has ``_MANIFESTS`` or more;
    5. delete files no kept snapshot references, once they are ``orphan_grace_minutes`` old
       (a quarter of that period apart: the walk reads every kept snapshot's manifest list).
    """

    def __init__(self, lake: LakeSettings, tables: list[Table]) -> None:
        self.lake = lake
        self.tables = tables
        self.every_s = lake.maintain_every_s or None  # 0: switched off
        self.policy = mx.CompactionPolicy(
            target_bytes=lake.target_file_mb * 1024 * 1024,
            fanout=lake.compact_fanout,
            budget_bytes=lake.compact_budget_mb * 1024 * 1024,
            cold_ms=int(lake.cold_minutes * 60_000),
        )
        self._properties = maintained_properties(lake)
        self._manifest_cache: dict[str, dict[str, tuple[str, ...]]] = {}
        self._orphans_at: dict[str, float] = {}
        self._last = time.monotonic()
        self.passes = 0

    def due(self) -> bool:
        return self.every_s is not None and time.monotonic() - self._last >= self.every_s

    def _orphans_due(self, name: str) -> bool:
        """Orphans are looked for four times per grace period: a file waits at most 1.25 graces."""
        now = time.monotonic()
        if now - self._orphans_at.get(name, -1e18) < self.lake.orphan_grace_minutes * 15:
            return False
        self._orphans_at[name] = now
        return True

    def run(self) -> None:
        """One pass over every table; a failure is logged and retried at the next pass."""
        self._last = time.monotonic()
        self.passes += 1
        for table in self.tables:
            began = time.perf_counter()
            name = str(table.name()[-1])
            try:
                mx.ensure_properties(table, self._properties)
                result = mx.compact(table, policy=self.policy)
                kept = retain(table, self.lake)
                manifests = mx.rewrite_manifests(table, min_count=_MANIFESTS)
                orphans: list[str] = []
                if self._orphans_due(name):
                    orphans = mx.remove_orphan_files(
                        table,
                        older_than=timedelta(minutes=self.lake.orphan_grace_minutes),
                        cache=self._manifest_cache.setdefault(name, {}),
                    )
                observe_files(table)
            except Exception as exc:
                log.warning("maintenance failed; retried at the next pass", table=name, error=str(exc))
                continue
            UPKEEP_SECONDS.labels(name).observe(time.perf_counter() - began)
            log.info(
                "maintenance", table=name, files_before=result.files_before, files_after=result.files_after,
                tagged=kept.tagged, expired=kept.expired, snapshots=kept.kept, orphans=len(orphans),
                manifests=manifests,
            )  # fmt: skip


def observe_files(table: Table) -> None:
    """Set the file-count gauges from the current snapshot's plan."""
    table = table.refresh()
    if table.current_snapshot() is None:
        return
    per_partition: dict[tuple[object, ...], int] = {}
    for task in table.scan().plan_files():
        key = tuple(task.file.partition[i] for i in range(len(task.file.partition)))
        per_partition[key] = per_partition.get(key, 0) + 1
    name = str(table.name()[-1])
    DATA_FILES.labels(name).set(sum(per_partition.values()))
    FILES_PER_PARTITION.labels(name).set(max(per_partition.values(), default=0))
