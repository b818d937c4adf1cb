"""Appends to one Iceberg table as a compare-and-set on the Kafka offsets it covers.

The protocol, per commit:

1. Refresh the table and read the offsets its head snapshot covers.
2. For every topic-partition in the batch, the head must cover exactly the batch's start offset.
   If the head is already at or past the batch's end, another writer (or this one, before a crash)
   committed the range: raise ``StaleWriterError`` and write nothing.
3. Append the rows with the merged offsets in the snapshot summary, in one transaction. Each row
   carries the commit's stamp, which is also the snapshot's time (k2.lake.stamp).
4. If the catalog refuses the commit because the head moved (another consumer of the same group
   committed *other* partitions), wait a random, growing moment and go back to 1. pyiceberg's own
   retry is off for K2's tables: it would re-apply a stale append on the new head and duplicate rows.

On a PostgreSQL catalog, K2's writers of one table take turns for steps 1-3 (k2.lake.commit_lock),
so they rarely reach step 4; the compare-and-set stays the guard.
"""

from __future__ import annotations

import random
import time

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table

from k2.lake.append import append_sorted
from k2.lake.commit_lock import commit_lock
from k2.lake.errors import LakeError, StaleWriterError
from k2.lake.offsets import OFFSETS_KEY, encode_offsets, table_offsets
from k2.lake.stamp import add_stamp, has_stamp, next_stamp, stamping
from k2.observability.metrics import REGISTRY, Counter, Histogram
from k2.types import Offsets

__all__ = ["NO_OFFSET", "TableWriter"]

#: The start offset of a partition the table has never covered.
NO_OFFSET = -1

ROWS_WRITTEN = Counter("k2_lake_rows_written_total", "Rows appended to Iceberg", ["table"], registry=REGISTRY)
COMMITS = Counter("k2_lake_commits_total", "Iceberg commits", ["table"], registry=REGISTRY)
COMMIT_RETRIES = Counter(
    "k2_lake_commit_conflicts_total",
    "Commits retried after a concurrent commit",
    ["table"],
    registry=REGISTRY,
)
COMMIT_SECONDS = Histogram(
    "k2_lake_commit_seconds",
    "Iceberg commit latency",
    ["table"],
    registry=REGISTRY,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
ROWS_PER_COMMIT = Histogram(
    "k2_lake_rows_per_commit",
    "Rows per Iceberg commit",
    ["table"],
    registry=REGISTRY,
    buckets=(0, 10, 100, 1_000, 10_000, 100_000, 1_000_000),
)

_MAX_CONFLICTS = 20
#: Waits after a conflict: up to base * 2**attempt, at most the cap, drawn uniformly ("full jitter").
_BACKOFF_BASE_S = 0.01
_BACKOFF_CAP_S = 1.0


class TableWriter:
    """The writer of one table; create one per table per pipeline process."""

    def __init__(self, catalog: Catalog, identifier: str, sort_by: tuple[str, ...] = ()) -> None:
        self.identifier = identifier
        self.name = identifier.rsplit(".", 1)[-1]
        self._catalog = catalog
        self.table: Table = catalog.load_table(identifier)
        self._sort = sort_by

    def offsets(self) -> Offsets:
        self.table = self.table.refresh()
        return table_offsets(self.table)

    def commit(self, rows: pa.Table, start: Offsets, end: Offsets) -> int:
        """Append ``rows`` covering Kafka range [start, end) per partition; returns the snapshot id.

        Raises:
            StaleWriterError: the table's head does not sit at ``start`` for this batch's partitions.
            LakeError: too many concurrent commits in a row, or the append failed.
        """
        began = time.perf_counter()
        for attempt in range(_MAX_CONFLICTS):
            with commit_lock(self._catalog, self.identifier):  # K2's writers take turns (PostgreSQL)
                landed = self._attempt(rows, start, end)
            if landed:
                break
            COMMIT_RETRIES.labels(self.name).inc()
            # Retrying at once, the losers of a race race again in step and the slowest writer
            # can lose every round (4 writers committing back to back through PostgreSQL: 2 gave
            # up after 20 straight conflicts). A random wait that grows spreads them out.
            time.sleep(random.uniform(0, min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * 2**attempt)))
        else:
            raise LakeError(
                f"gave up committing to {self.identifier} after {_MAX_CONFLICTS} concurrent commits"
            )
        self.table = self.table.refresh()
        snapshot = self.table.current_snapshot()
        COMMITS.labels(self.name).inc()
        ROWS_WRITTEN.labels(self.name).inc(rows.num_rows)
        ROWS_PER_COMMIT.labels(self.name).observe(rows.num_rows)
        COMMIT_SECONDS.labels(self.name).observe(time.perf_counter() - began)
        return snapshot.snapshot_id if snapshot else 0

    def _attempt(self, rows: pa.Table, start: Offsets, end: Offsets) -> bool:
        """One compare-and-set on a fresh head; False when a concurrent commit moved it first."""
        self.table = self.table.refresh()
        head = table_offsets(self.table)
        moved = {
            tp: head.get(tp, NO_OFFSET) for tp in end if head.get(tp, NO_OFFSET) != start.get(tp, NO_OFFSET)
        }
        if moved:
            raise StaleWriterError(self.identifier, {tp: start.get(tp, NO_OFFSET) for tp in moved}, moved)
        merged = {**head, **end}
        stamp = next_stamp(self.table)
        data = add_stamp(rows, stamp) if has_stamp(self.table) else rows
        try:
            with stamping(stamp), self.table.transaction() as txn:
                append_sorted(txn, self.table.io, data, self._sort, {OFFSETS_KEY: encode_offsets(merged)})
        except CommitFailedException:
            return False
        except Exception as exc:
            raise LakeError(f"append to {self.identifier} failed: {exc}") from exc
        return True
