"""Commit stamps: every row K2 writes carries the time of the commit that wrote it.

Time travel "as of T" must stay exact after the snapshot committed at T has been expired (a
week of per-second snapshots would bloat every metadata.json). K2's tables are append-only and
compaction moves rows without changing them, so the table as of T is exactly the rows of any
later snapshot whose commit happened at or before T, if each row says when it was committed.

The writer picks the stamp ``s`` before it writes its files (``next_stamp``): the head's time
plus one at least, so stamps grow strictly with commits. Iceberg's own snapshot time is then set
to the same ``s`` (``stamping``), so "committed at or before T" means the same to Iceberg's
``snapshot_as_of_timestamp`` and to the row filter ``k2_commit_ms <= T``: an answer read from a
kept snapshot and one filtered out of a later snapshot are identical.

Rows written by a K2 without stamps hold null; they all precede ``k2.stamped-since-ms`` (a table
property), so the filter keeps them for any T at or after it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import numpy as np
import pyarrow as pa
import pyiceberg.table.update.snapshot as _snapshot_module
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot
from pyiceberg.types import LongType

from k2.lake.errors import LakeError

__all__ = [
    "STAMPED_SINCE_KEY",
    "STAMP_COLUMN",
    "add_stamp",
    "ensure_stamp_column",
    "next_stamp",
    "stamped_since",
    "stamping",
    "without_stamp",
]

STAMP_COLUMN = "k2_commit_ms"
STAMPED_SINCE_KEY = "k2.stamped-since-ms"
STAMP_DOC = "Iceberg snapshot time (ms) of the commit that wrote the row"

_ATTEMPTS = 10
_STAMP: ContextVar[int | None] = ContextVar("k2_commit_stamp", default=None)


def _stamped_snapshot(**fields: Any) -> Snapshot:
    """pyiceberg's snapshot producer builds ``Snapshot(...)`` without a time: give it the stamp."""
    ms = _STAMP.get()
    if ms is not None and "timestamp_ms" not in fields:
        fields["timestamp_ms"] = ms
    return Snapshot(**fields)


# The one name the producer module calls to build a new snapshot (pyiceberg 0.10-0.12).
_snapshot_module.Snapshot = _stamped_snapshot  # type: ignore[attr-defined, assignment]


def next_stamp(table: Table) -> int:
    """Now in ms, but strictly after the head's commit time: stamps order commits."""
    now = int(time.time() * 1000)
    head = table.current_snapshot()
    return max(now, head.timestamp_ms + 1) if head is not None else now


@contextmanager
def stamping(ms: int) -> Iterator[None]:
    """Snapshots created in this block (this thread or task) are timed ``ms``."""
    token = _STAMP.set(ms)
    try:
        yield
    finally:
        _STAMP.reset(token)


def has_stamp(table: Table) -> bool:
    return STAMP_COLUMN in table.schema().column_names


def add_stamp(rows: pa.Table, ms: int) -> pa.Table:
    """``rows`` with the stamp column set to ``ms`` (replacing one already there)."""
    if STAMP_COLUMN in rows.column_names:
        rows = rows.drop_columns([STAMP_COLUMN])
    return rows.append_column(
        pa.field(STAMP_COLUMN, pa.int64()), pa.array(np.full(rows.num_rows, ms, np.int64))
    )


def without_stamp(schema: pa.Schema) -> pa.Schema:
    """The schema of the rows a sink buffers: the writer adds the stamp at commit time."""
    index = schema.get_field_index(STAMP_COLUMN)
    return schema.remove(index) if index >= 0 else schema


def stamped_since(table: Table) -> int | None:
    """From when on every commit stamped its rows (ms); None for a table without stamps."""
    if not has_stamp(table):
        return None
    return int(table.properties.get(STAMPED_SINCE_KEY, "0"))


def ensure_stamp_column(table: Table) -> bool:
    """Add the stamp column to a table created by an older K2; True if it was added.

    Its rows so far hold null; ``k2.stamped-since-ms`` records from when on commits are stamped.
    """
    for _ in range(_ATTEMPTS):
        table = table.refresh()
        if has_stamp(table):
            return False
        try:
            with table.transaction() as txn:
                with txn.update_schema() as update:
                    update.add_column(STAMP_COLUMN, LongType(), doc=STAMP_DOC)
                txn.set_properties({STAMPED_SINCE_KEY: str(next_stamp(table))})
        except CommitFailedException:
            continue  # another process evolved it, or committed: look again
        return True
    raise LakeError(f"adding {STAMP_COLUMN} to {table.name()} kept losing to concurrent commits")
