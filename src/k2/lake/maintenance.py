"""Table maintenance for streaming tables: compaction, snapshot expiry, orphan files, manifests.

Streaming commits leave many small files and a long snapshot history; both make query planning
slower with every commit (MEASURED.md: 4.7 ms on one file, 437 ms after 200 commits). Every
operation here is itself a compare-and-set commit that carries the pipeline's offsets forward,
so it can run while ``k2 ingest`` is writing: if the pipeline commits first, the operation
starts again on the new head instead of overwriting it.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pyarrow as pa
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.io.pyarrow import _dataframe_to_data_files
from pyiceberg.manifest import DataFile, ManifestContent
from pyiceberg.table import Table

from k2.lake.errors import LakeError
from k2.lake.offsets import OFFSETS_KEY, encode_offsets, table_offsets
from k2.lake.stamp import next_stamp, stamping
from k2.lake.storage import canonical, list_files
from k2.observability.logging import get_logger

__all__ = [
    "CompactionPolicy",
    "CompactionResult",
    "compact",
    "ensure_properties",
    "expire_snapshots",
    "remove_orphan_files",
    "rewrite_manifests",
]

log = get_logger(__name__)
_ATTEMPTS = 10
_READERS = 4  # small files are mostly per-file overhead: read a few at once


@dataclass(frozen=True)
class CompactionResult:
    partitions: int
    files_before: int
    files_after: int
    rows: int


def _sort_keys(table: Table) -> list[tuple[str, str]]:
    schema = table.schema()
    order = table.sort_order()
    return [(schema.find_column_name(f.source_id) or "", "ascending") for f in order.fields]


@dataclass(frozen=True)
class CompactionPolicy:
    """Which small files to merge, so that a pass costs little and files per partition stay bounded.

    Rewriting a hot partition whole at every pass would copy the day's data again each minute.
    Instead files are merged by size tier (LSM-style): ``fanout`` files of one tier become one
    file of the next, so each byte is rewritten about log_fanout(target / commit size) times
    and a partition holds fewer than ``fanout`` files per tier. A partition that received no
    file for ``cold_ms`` is merged whole into ``target_bytes`` files, once. One pass rewrites
    at most ``budget_bytes``; the rest waits for the next pass.
    """

    target_bytes: int = 128 * 1024 * 1024
    fanout: int = 4
    budget_bytes: int = 256 * 1024 * 1024
    cold_ms: int = 3_600_000
    base_bytes: int = 256 * 1024  # everything under this is tier 0

    def tier(self, size: int) -> int:
        return 0 if size <= self.base_bytes else int(math.log(size / self.base_bytes, self.fanout))

    def choose(self, files: list[tuple[DataFile, int]], now_ms: int) -> list[list[DataFile]]:
        """Bins of files to merge in one partition (``files``: each with the ms it was added)."""
        small = [f for f, _ in files if f.file_size_in_bytes < self.target_bytes * 3 // 4]
        if len(small) < 2:
            return []
        if max(added for _, added in files) < now_ms - self.cold_ms:
            return [small]
        tiers: dict[int, list[DataFile]] = defaultdict(list)
        for f in small:
            tiers[self.tier(f.file_size_in_bytes)].append(f)
        return [group for group in tiers.values() if len(group) >= self.fanout]


def compact(
    table: Table,
    *,
    min_files: int = 2,
    policy: CompactionPolicy | None = None,
    on_bin: Callable[[int, int], None] | None = None,
) -> CompactionResult:
    """Merge data files per partition into sorted larger files; rows and offsets are unchanged.

    Without a ``policy`` every partition with ``min_files`` or more files is rewritten whole (the
    manual ``k2 lake compact``); with one, only the bins the policy chooses, within its budget.
    ``on_bin(done, bins)`` hears of each bin rewritten (the CLI's progress).

    Raises:
        LakeError: the table kept moving under it for too many attempts.
    """
    for _ in range(_ATTEMPTS):
        table = table.refresh()
        snapshot = table.current_snapshot()
        if snapshot is None:
            return CompactionResult(0, 0, 0, 0)
        groups = _live_files(table)
        total = sum(map(len, groups.values()))
        if policy is None:
            bins = [[f for f, _ in files] for files in groups.values() if len(files) >= min_files]
        else:
            now_ms = int(time.time() * 1000)
            bins = _within_budget(
                [b for files in groups.values() for b in policy.choose(files, now_ms)], policy.budget_bytes
            )
        if not bins:
            return CompactionResult(0, total, total, 0)
        offsets = table_offsets(table)
        props = {OFFSETS_KEY: encode_offsets(offsets)} if offsets else {}
        keys = _sort_keys(table)
        schema = table.schema().as_arrow()
        rows = files_after = 0
        try:
            with (
                stamping(next_stamp(table)),  # snapshot times stay strictly ordered (k2.lake.stamp)
                table.transaction() as txn,
                txn.update_snapshot(snapshot_properties=props).overwrite() as rewrite,
            ):
                for done, files in enumerate(bins):
                    if on_bin is not None:
                        on_bin(done, len(bins))
                    with ThreadPoolExecutor(_READERS) as pool:  # pyarrow reads without the GIL
                        parts = list(
                            pool.map(_read_data_file, [table] * len(files), [f.file_path for f in files])
                        )
                    data = pa.concat_tables([_conform(p, schema) for p in parts])
                    del parts
                    if keys:
                        data = data.sort_by(keys)
                    rows += data.num_rows
                    for f in files:
                        rewrite.delete_data_file(f)
                    for new in _dataframe_to_data_files(table.metadata, data, table.io):
                        rewrite.append_data_file(new)
                        files_after += 1
        except CommitFailedException:
            log.info("compaction lost a race with a commit; retrying on the new head", table=table.name())
            continue
        if on_bin is not None:
            on_bin(len(bins), len(bins))
        before = sum(map(len, bins))
        log.info("compacted", table=str(table.name()), bins=len(bins), files_before=before,
                 files_after=files_after, rows=rows)  # fmt: skip
        return CompactionResult(len(bins), before, files_after, rows)
    raise LakeError(f"compaction of {table.name()} gave up after {_ATTEMPTS} concurrent commits")


def _within_budget(bins: list[list[DataFile]], budget: int) -> list[list[DataFile]]:
    """The smallest bins first, each trimmed to its smallest files, until ``budget`` bytes."""
    out: list[list[DataFile]] = []
    for group in sorted(bins, key=lambda b: sum(f.file_size_in_bytes for f in b)):
        taken: list[DataFile] = []
        for f in sorted(group, key=lambda f: f.file_size_in_bytes):
            if f.file_size_in_bytes > budget and taken:
                break
            taken.append(f)
            budget -= f.file_size_in_bytes
        if len(taken) >= 2:
            out.append(taken)
        if budget <= 0:
            break
    return out


def _live_files(table: Table) -> dict[tuple[object, ...], list[tuple[DataFile, int]]]:
    """The current snapshot's data files per partition, each with the ms its snapshot committed.

    A file whose adding snapshot is expired counts as old (0): it was added before the dense window.
    """
    snapshot = table.current_snapshot()
    groups: dict[tuple[object, ...], list[tuple[DataFile, int]]] = defaultdict(list)
    if snapshot is None:
        return groups
    for manifest in snapshot.manifests(table.io):
        if manifest.content != ManifestContent.DATA:
            continue
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
            f = entry.data_file
            added = table.snapshot_by_id(entry.snapshot_id) if entry.snapshot_id else None
            key = (f.spec_id, *(f.partition[i] for i in range(len(f.partition))))
            groups[key].append((f, added.timestamp_ms if added else 0))
    return groups


def _conform(part: pa.Table, schema: pa.Schema) -> pa.Table:
    """A file's rows in the table's schema; a column added since (the commit stamp) is null."""
    for field in schema:
        if field.name not in part.column_names:
            part = part.append_column(field.name, pa.nulls(part.num_rows, field.type))
    return part.select(schema.names).cast(schema)


def _read_data_file(table: Table, path: str) -> pa.Table:
    import pyarrow.parquet as pq

    with table.io.new_input(path).open() as stream:
        return pq.read_table(stream)


def expire_snapshots(table: Table, *, older_than: timedelta, keep_last: int = 1) -> int:
    """Expire snapshots older than the time-travel window, keeping the newest ``keep_last``.

    The current snapshot, the one the pipeline resumes from, is never expired. Returns the count.
    """
    table = table.refresh()
    snapshots = sorted(table.snapshots(), key=lambda s: s.timestamp_ms)
    if not snapshots:
        return 0
    cutoff_ms = int((datetime.now(UTC) - older_than).timestamp() * 1000)
    protected = {s.snapshot_id for s in snapshots[-max(keep_last, 1) :]}
    current = table.current_snapshot()
    if current is not None:
        protected.add(current.snapshot_id)
    doomed = [
        s.snapshot_id for s in snapshots if s.timestamp_ms < cutoff_ms and s.snapshot_id not in protected
    ]
    if doomed:
        table.maintenance.expire_snapshots().by_ids(doomed).commit()
    return len(doomed)


def rewrite_manifests(table: Table, *, min_count: int = 2) -> tuple[int, int]:
    """Merge the current snapshot's manifests into as few as possible; returns (before, after).

    Appends already merge at 20 manifests (``commit.manifest.min-count-to-merge``); this brings a
    snapshot down to one, at the cost of three commits, so a scheduled pass asks for ``min_count``.
    """
    table = table.refresh()
    snapshot = table.current_snapshot()
    if snapshot is None:
        return 0, 0
    before = len(snapshot.manifests(table.io))
    if before < min_count:
        return before, before
    offsets = table_offsets(table)
    props = {OFFSETS_KEY: encode_offsets(offsets)} if offsets else {}
    with stamping(next_stamp(table)), table.transaction() as txn:
        txn.set_properties({"commit.manifest.min-count-to-merge": "2"})
        txn.update_snapshot(snapshot_properties=props).merge_append().commit()
    with table.transaction() as txn:
        txn.set_properties({"commit.manifest.min-count-to-merge": "20"})
    table = table.refresh()
    after_snapshot = table.current_snapshot()
    after = len(after_snapshot.manifests(table.io)) if after_snapshot else 0
    return before, after


def remove_orphan_files(
    table: Table,
    *,
    older_than: timedelta = timedelta(hours=1),
    dry_run: bool = False,
    cache: dict[str, tuple[str, ...]] | None = None,
) -> list[str]:
    """Delete files under the table's location that no snapshot or metadata file references.

    Files younger than ``older_than`` are kept: a writer in flight has written them but not yet
    committed. pyiceberg's snapshot expiry deletes nothing, so this is what reclaims space.
    Snapshots share most manifests, and a manifest never changes: each is read once per call,
    and once per process with a ``cache`` (pruned here to the manifests still referenced).
    Listing and deleting go through the table's FileIO, so this works on local disk and on S3
    alike; the locations returned are canonical (``k2.lake.storage.canonical``).

    Raises:
        StorageError: the table's location could not be listed.
    """
    table = table.refresh()
    referenced: set[str] = {canonical(table.metadata_location)}
    referenced.update(canonical(entry.metadata_file) for entry in table.metadata.metadata_log)
    files_of: dict[str, tuple[str, ...]] = {}
    memo = cache if cache is not None else {}
    for snapshot in table.snapshots():
        referenced.add(canonical(snapshot.manifest_list))
        for manifest in snapshot.manifests(table.io):
            path = manifest.manifest_path
            if path in files_of:
                continue
            if path not in memo:
                entries = manifest.fetch_manifest_entry(table.io, discard_deleted=False)
                memo[path] = tuple(canonical(e.data_file.file_path) for e in entries)
            files_of[path] = memo[path]
    for manifest_path, data_files in files_of.items():
        referenced.add(canonical(manifest_path))
        referenced.update(data_files)
    if cache is not None:
        for stale in set(cache) - set(files_of):
            del cache[stale]
    cutoff = time.time() - older_than.total_seconds()
    removed: list[str] = []
    for stored in list_files(table.io, table.location()):
        if stored.location not in referenced and stored.mtime_s < cutoff:
            removed.append(stored.location)
            if not dry_run:
                with contextlib.suppress(FileNotFoundError):  # another cleaner got there first
                    table.io.delete(stored.location)
    return removed


def ensure_properties(table: Table, wanted: dict[str, str]) -> bool:
    """Set table properties that differ from ``wanted`` (tables created by an older K2); True if any.

    Raises:
        CommitFailedException: a concurrent commit won; the next pass tries again.
    """
    table = table.refresh()
    missing = {k: v for k, v in wanted.items() if table.properties.get(k) != v}
    if missing:
        with table.transaction() as txn:
            txn.set_properties(missing)
    return bool(missing)
