"""Resolve "as of T" to a snapshot to read, and whether its rows must be cut at T.

The table as of T is the newest commit at or before T. If that snapshot is still kept, it is read
whole, as any Iceberg engine would. Once it has been expired (the dense window is minutes, see
k2.lake.retention), the answer is the next kept snapshot (a checkpoint, or the head) cut to the
rows whose commit stamp is at or before T (k2.lake.stamp): tables are append-only and compaction
keeps rows as they were, so the cut holds exactly the rows the expired snapshot held.

The cut is exact from ``k2.stamped-since-ms`` on (a table's first commit, for tables created with
stamps). Before that, on a table whose expired history was never stamped, there is no exact answer
and the request fails instead of returning the nearest kept snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

from k2.lake.stamp import stamped_since
from k2.query.errors import SnapshotNotFoundError

__all__ = ["AsOf", "resolve_as_of"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class AsOf:
    """What to read for "as of T": ``snapshot`` whole, or cut to rows stamped <= ``until_ms``."""

    snapshot: Snapshot | None
    until_ms: int | None = None


def resolve_as_of(table: Table, name: str, as_of: datetime) -> AsOf:
    """Raises:
    SnapshotNotFoundError: commits at or before T were expired and were not stamped.
    """
    ms = (as_of - _EPOCH) // timedelta(milliseconds=1)  # exact: timestamp() * 1000 can land 1 ms short
    before: Snapshot | None = None
    after: Snapshot | None = None
    # Expiry drops a snapshot's log entry and the parent id of its child, so a gap shows only in
    # the sequence numbers: each snapshot takes the next one (K2 writes no branches).
    for entry in table.metadata.snapshot_log:  # the head's history, oldest first; kept ones only
        snap = table.snapshot_by_id(entry.snapshot_id)
        if snap is None:
            continue
        if entry.timestamp_ms <= ms:
            before = snap
        elif after is None:
            after = snap
    if after is None:
        return AsOf(before)  # T is at or after the last commit (or the table is empty)
    previous = (before.sequence_number or 0) if before is not None else 0
    if (after.sequence_number or 0) == previous + 1:
        return AsOf(before)  # nothing between them was expired: the kept snapshot is the answer
    since = stamped_since(table)
    if since is not None and ms >= since:
        return AsOf(after, ms)
    raise SnapshotNotFoundError(
        f"{name} keeps no exact state as of {as_of.isoformat()}: the commits around that time were "
        "expired before K2 stamped rows with their commit time"
        + (f" (exact from {datetime.fromtimestamp(since / 1000, UTC).isoformat()})" if since else ""),
        table=name,
        as_of=as_of.isoformat(),
    )
