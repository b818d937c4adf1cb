"""Table maintenance on a schedule, run by ``k2 ingest`` itself (``lake.maintain_every_s``).

It runs on the pipeline's commit worker, between two commits, so it never races the pipeline's
own appends; against other writers every operation is a compare-and-set like any commit.
"""

from __future__ import annotations

import time
from datetime import timedelta

from pyiceberg.table import Table

from k2.config import LakeSettings
from k2.lake import maintenance as mx
from k2.observability.logging import get_logger
from k2.observability.metrics import REGISTRY, Gauge, Histogram

__all__ = ["Upkeep"]

log = get_logger(__name__)

DATA_FILES = Gauge("k2_lake_data_files", "Data files in the current snapshot", ["table"], registry=REGISTRY)
FILES_PER_PARTITION = Gauge(
    "k2_lake_files_per_partition_max", "Most data files in one partition", ["table"], registry=REGISTRY
)
UPKEEP_SECONDS = Histogram(
    "k2_lake_maintenance_seconds", "One maintenance pass over a table", ["table"], registry=REGISTRY,
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)  # fmt: skip


class Upkeep:
    """Compaction, snapshot expiry, orphan cleanup and manifest merging, every ``every_s`` seconds."""

    def __init__(self, lake: LakeSettings, tables: list[Table]) -> None:
        self.lake = lake
        self.tables = tables
        self.every_s = lake.maintain_every_s
        self._last = time.monotonic()

    def due(self) -> bool:
        return self.every_s is not None and time.monotonic() - self._last >= self.every_s

    def run(self) -> None:
        """One pass over every table; a failure is logged and retried at the next pass."""
        self._last = time.monotonic()
        for table in self.tables:
            began = time.perf_counter()
            try:
                result = mx.compact(table)
                expired = mx.expire_snapshots(
                    table,
                    older_than=timedelta(hours=self.lake.time_travel_hours),
                    keep_last=self.lake.keep_snapshots,
                )
                orphans = mx.remove_orphan_files(table)
                manifests = mx.rewrite_manifests(table)
                observe_files(table)
            except Exception as exc:
                log.warning(
                    "maintenance failed; retried at the next pass", table=str(table.name()), error=str(exc)
                )
                continue
            UPKEEP_SECONDS.labels(str(table.name()[-1])).observe(time.perf_counter() - began)
            log.info(
                "maintenance", table=str(table.name()), files_before=result.files_before,
                files_after=result.files_after, expired=expired, orphans=len(orphans), manifests=manifests,
            )  # fmt: skip


def observe_files(table: Table) -> None:
    """Set the file-count gauges from the current snapshot's plan."""
    table = table.refresh()
    if table.current_snapshot() is None:
        return
    per_partition: dict[tuple[object, ...], int] = {}
    for task in table.scan().plan_files():
        key = tuple(task.file.partition)
        per_partition[key] = per_partition.get(key, 0) + 1
    name = str(table.name()[-1])
    DATA_FILES.labels(name).set(sum(per_partition.values()))
    FILES_PER_PARTITION.labels(name).set(max(per_partition.values(), default=0))
