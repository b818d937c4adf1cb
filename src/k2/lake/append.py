"""Append rows to a partitioned table with one sort, instead of one filter pass per partition.

pyiceberg's ``Transaction.append`` splits a table into partitions by filtering the whole table
once per partition value (``_determine_partitions``): a streaming commit of 500 K trades over
8 symbol buckets scans it eight times, which with K2's own sort took about 40 % of a commit.
Sorting once by (partition values, then the table's sort columns) makes every partition a
contiguous, zero-copy slice that is already in the file's sort order. The files, their partition
values and the snapshot are what ``append`` would produce; the only difference is the cost.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import _check_pyarrow_schema_compatible, pyarrow_to_schema, write_file
from pyiceberg.partitioning import PartitionFieldValue, PartitionKey
from pyiceberg.table import TableProperties, Transaction, WriteTask
from pyiceberg.utils.properties import property_as_bool

__all__ = ["append_sorted"]


def append_sorted(
    txn: Transaction,
    io: FileIO,
    rows: pa.Table,
    sort_by: Sequence[str],
    snapshot_properties: dict[str, str],
) -> None:
    """Append ``rows`` in one snapshot, each data file sorted by ``sort_by``.

    Falls back to ``txn.append`` (after a plain sort) for an unpartitioned table or null
    partition values, which the pipeline never writes but other callers might.
    """
    meta = txn.table_metadata
    spec, schema = meta.spec(), meta.schema()
    order = [(name, "ascending") for name in sort_by]
    keys = []
    for field in spec.fields:
        name = schema.find_column_name(field.source_id)
        source = schema.find_field(field.source_id)
        keys.append(field.transform.pyarrow_transform(source.field_type)(rows.column(name)))
    if spec.is_unpartitioned() or not rows.num_rows or any(k.null_count for k in keys):
        txn.append(rows.sort_by(order) if order and rows.num_rows else rows, snapshot_properties)
        return
    _check_pyarrow_schema_compatible(schema, provided_schema=rows.schema, format_version=meta.format_version)

    key_names = [f"__k2_partition_{i}" for i in range(len(keys))]
    keyed = pa.table([*keys, *(rows.column(name) for name, _ in order)], names=[*key_names, *sort_by])
    index = pc.sort_indices(keyed, sort_keys=[(k, "ascending") for k in key_names] + order)
    rows = rows.take(index)
    keys = [pc.take(k, index) for k in keys]
    change = np.zeros(rows.num_rows, dtype=bool)
    change[0] = True
    for k in keys:
        values = k.to_numpy(zero_copy_only=False)
        change[1:] |= values[1:] != values[:-1]
    starts = np.flatnonzero(change).tolist()
    ends = [*starts[1:], rows.num_rows]

    task_schema = pyarrow_to_schema(
        rows.schema, name_mapping=schema.name_mapping, format_version=meta.format_version
    )
    update = txn.update_snapshot(snapshot_properties=snapshot_properties)
    merge = property_as_bool(
        meta.properties,
        TableProperties.MANIFEST_MERGE_ENABLED,
        TableProperties.MANIFEST_MERGE_ENABLED_DEFAULT,
    )
    with update.merge_append() if merge else update.fast_append() as append_files:
        write_uuid = append_files.commit_uuid or uuid.uuid4()
        tasks = [
            WriteTask(
                write_uuid=write_uuid,
                task_id=task_id,
                record_batches=rows.slice(start, end - start).to_batches(),
                partition_key=PartitionKey(
                    field_values=[
                        PartitionFieldValue(field=field, value=k[start].as_py())
                        for field, k in zip(spec.fields, keys, strict=True)
                    ],
                    partition_spec=spec,
                    schema=schema,
                ),
                schema=task_schema,
            )
            for task_id, (start, end) in enumerate(zip(starts, ends, strict=True))
        ]
        for data_file in write_file(io=io, table_metadata=meta, tasks=iter(tasks)):
            append_files.append_data_file(data_file)
