"""Snapshot retention: a dense recent window, then tagged checkpoints, instead of every commit.

A streaming table commits about once a second. Keeping every snapshot of a week's time-travel
window would put ~600,000 snapshots in every metadata.json, which each commit rewrites in full
(measured: 0.76 KB per snapshot, commit p90 1.3 s -> 1.7 s in 13 minutes). So K2 keeps:

1. the newest ``keep_snapshots`` snapshots and every snapshot still current within the last
   ``dense_minutes`` (a query that began on it can finish reading its files);
2. one checkpoint every ``checkpoint_minutes``: the then-current snapshot, held by an Iceberg tag
   (``k2-ckpt-<commit ms>``), which pyiceberg's expiry never removes;
3. beyond ``coarse_after_hours``, one checkpoint per ``coarse_checkpoint_minutes``;
4. nothing older than ``time_travel_hours``: such tags are removed, their snapshots expired.

Time travel "as of T" then reads the newest kept snapshot committed at or before T (pyiceberg's
snapshot log drops expired snapshots, so ``snapshot_as_of_timestamp`` finds exactly that one).
Every step is a metadata-only commit: it never moves the table's head, so the pipeline's offsets,
read from the head, are untouched, and a concurrent append is rebased, not refused.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table
from pyiceberg.table.refs import SnapshotRefType

from k2.config import LakeSettings
from k2.lake.errors import LakeError
from k2.observability.logging import get_logger

__all__ = ["CHECKPOINT_PREFIX", "RetentionResult", "checkpoints", "retain"]

CHECKPOINT_PREFIX = "k2-ckpt-"
_ATTEMPTS = 10
log = get_logger(__name__)


@dataclass(frozen=True)
class RetentionResult:
    tagged: int
    untagged: int
    expired: int
    kept: int


def checkpoints(table: Table) -> dict[str, int]:
    """K2's checkpoint tags: tag name -> snapshot id."""
    return {
        name: ref.snapshot_id
        for name, ref in table.metadata.refs.items()
        if ref.snapshot_ref_type == SnapshotRefType.TAG and name.startswith(CHECKPOINT_PREFIX)
    }


def _tag_ms(name: str) -> int:
    return int(name.removeprefix(CHECKPOINT_PREFIX))


def retain(table: Table, lake: LakeSettings, *, now_ms: int | None = None) -> RetentionResult:
    """Tag a new checkpoint if one is due, drop surplus checkpoints, expire everything else old.

    Raises:
        LakeError: the catalog kept refusing the metadata commit.
    """
    for _ in range(_ATTEMPTS):
        try:
            return _retain_once(table.refresh(), lake, now_ms or int(time.time() * 1000))
        except CommitFailedException:
            log.info("retention lost a race with a commit; retrying", table=str(table.name()))
    raise LakeError(f"snapshot retention of {table.name()} gave up after {_ATTEMPTS} concurrent commits")


def _retain_once(table: Table, lake: LakeSettings, now_ms: int) -> RetentionResult:
    current = table.current_snapshot()
    if current is None:
        return RetentionResult(0, 0, 0, 0)
    tags = checkpoints(table)
    travel_ms = int(lake.time_travel_hours * 3_600_000)
    step_ms = int(lake.checkpoint_minutes * 60_000)
    coarse_ms = int(lake.coarse_checkpoint_minutes * 60_000)
    coarse_after_ms = int(lake.coarse_after_hours * 3_600_000)

    # 1. a new checkpoint on the current snapshot, once the newest is a step old
    new_tag = None
    newest = max(map(_tag_ms, tags), default=None)
    if travel_ms > 0 and (newest is None or current.timestamp_ms - newest >= step_ms):
        new_tag = f"{CHECKPOINT_PREFIX}{current.timestamp_ms}"
        if new_tag in tags:
            new_tag = None
    # 2. checkpoints past the window go; past coarse_after, the first of each coarse bucket stays
    drop: list[str] = []
    seen_buckets: set[int] = set()
    for name in sorted(tags, key=_tag_ms):
        ms = _tag_ms(name)
        age = now_ms - ms
        if age > travel_ms:
            drop.append(name)
        elif age > coarse_after_ms:
            bucket = ms // coarse_ms
            if bucket in seen_buckets:
                drop.append(name)
            seen_buckets.add(bucket)
    if new_tag or drop:
        with table.manage_snapshots() as manage:
            for name in drop:
                manage.remove_tag(name)
            if new_tag:
                manage.create_tag(current.snapshot_id, new_tag)
        table = table.refresh()

    # 3. expire what neither the dense window nor a ref holds
    snapshots = sorted(table.snapshots(), key=lambda s: (s.timestamp_ms, s.sequence_number or 0))
    protected = {ref.snapshot_id for ref in table.metadata.refs.values()}
    protected.update(s.snapshot_id for s in snapshots[-lake.keep_snapshots :])
    dense_from = now_ms - int(lake.dense_minutes * 60_000)
    # a snapshot was the head until its successor was committed: expire those replaced before the
    # dense window, except the newest keep_snapshots; one ``older_than`` instead of ``by_ids``,
    # which copies the whole table metadata once per id
    last = -1
    for i, (_snap, successor) in enumerate(itertools.pairwise(snapshots)):
        if i < len(snapshots) - lake.keep_snapshots and successor.timestamp_ms < dense_from:
            last = i
    doomed = [s.snapshot_id for s in snapshots[: last + 1] if s.snapshot_id not in protected]
    if doomed:
        cutoff = datetime.fromtimestamp((snapshots[last].timestamp_ms + 1) / 1000, UTC)
        table.maintenance.expire_snapshots().older_than(cutoff).commit()
    return RetentionResult(int(new_tag is not None), len(drop), len(doomed), len(snapshots) - len(doomed))
