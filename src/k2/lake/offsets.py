"""Kafka offsets stored in Iceberg snapshot summaries: the pipeline's only checkpoint.

Each commit writes the *full* map of next-offsets for every topic-partition the table has ever
covered under the summary key ``k2.offsets``. Snapshots that K2 did not write (or maintenance
snapshots that forgot to carry it) are skipped by walking back through parent snapshots.
"""

from __future__ import annotations

import json

from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

from k2.types import Offsets

__all__ = ["OFFSETS_KEY", "decode_offsets", "encode_offsets", "snapshot_offsets", "table_offsets"]

OFFSETS_KEY = "k2.offsets"


def encode_offsets(offsets: Offsets) -> str:
    nested: dict[str, dict[str, int]] = {}
    for (topic, partition), offset in sorted(offsets.items()):
        nested.setdefault(topic, {})[str(partition)] = offset
    return json.dumps(nested, separators=(",", ":"), sort_keys=True)


def decode_offsets(text: str) -> Offsets:
    nested: dict[str, dict[str, int]] = json.loads(text)
    return {(topic, int(p)): int(o) for topic, parts in nested.items() for p, o in parts.items()}


def snapshot_offsets(table: Table, snapshot: Snapshot | None) -> Offsets:
    """Offsets covered by a snapshot: its own, or its nearest ancestor's that recorded them."""
    while snapshot is not None:
        text = snapshot.summary.additional_properties.get(OFFSETS_KEY) if snapshot.summary else None
        if text is not None:
            return decode_offsets(text)
        snapshot = table.snapshot_by_id(snapshot.parent_snapshot_id) if snapshot.parent_snapshot_id else None
    return {}


def table_offsets(table: Table) -> Offsets:
    """Offsets covered by the table's current snapshot (empty for a new table)."""
    return snapshot_offsets(table, table.current_snapshot())
