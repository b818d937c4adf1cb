"""append_sorted writes what pyiceberg's append writes: same rows, partitions and per-file order."""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.table import Table
from pyiceberg.transforms import BucketTransform
from pyiceberg.types import StringType

from k2.lake.append import append_sorted
from k2.lake.tables import ROW_GROUP_ROWS
from tests.unit.lake.conftest import SCHEMA, rows

SYMBOLS = ("BHP", "RIO", "CBA", "NAB", "ANZ", "WBC", "CSL", "TLS", "WES", "WOW")
SORT = ("symbol", "exchange_ts", "sequence")


def _shuffled(n: int) -> pa.Table:
    # three days (a second per row would need 86,400 rows a day: space them by hours instead)
    t = rows(0, n, symbols=SYMBOLS)
    ts = pa.array([v.as_py().replace(hour=i % 24, day=10 + i % 3) for i, v in enumerate(t["exchange_ts"])])
    field = t.schema.field("exchange_ts")
    t = t.set_column(1, field, ts.cast(field.type))
    order = list(range(n))
    random.Random(7).shuffle(order)
    return t.take(order)


def _files(table: Table) -> list[tuple[dict[str, object], pa.Table]]:
    out = []
    for task in table.scan().plan_files():
        partition = {f.name: task.file.partition[i] for i, f in enumerate(table.spec().fields)}
        out.append((partition, pq.read_table(task.file.file_path.removeprefix("file://"))))
    return out


def test_same_rows_and_partitions_as_pyiceberg_append(catalog: SqlCatalog, table: Table) -> None:
    data = _shuffled(600)
    reference = catalog.create_table("k2.reference_append", SCHEMA, partition_spec=table.spec())
    reference.append(data)
    with table.transaction() as txn:
        append_sorted(txn, table.io, data, SORT, {"k2.test": "yes"})
    table = table.refresh()
    assert table.current_snapshot().summary["k2.test"] == "yes"
    got = table.scan().to_arrow().sort_by("kafka_offset")
    assert got.equals(reference.refresh().scan().to_arrow().sort_by("kafka_offset"))
    ours = {tuple(p.values()): f.num_rows for p, f in _files(table)}
    theirs = {tuple(p.values()): f.num_rows for p, f in _files(reference.refresh())}
    assert ours == theirs and len(ours) > 4  # several days x buckets


def test_each_file_is_one_partition_sorted_by_the_sort_columns(catalog: SqlCatalog, table: Table) -> None:
    with table.transaction() as txn:
        append_sorted(txn, table.io, _shuffled(500), SORT, {})
    bucket = BucketTransform(4).pyarrow_transform(StringType())
    for partition, rows_ in _files(table.refresh()):
        assert set(bucket(rows_["symbol"]).to_pylist()) == {partition["b"]}
        keys = list(zip(*(rows_[c].to_pylist() for c in SORT), strict=True))
        assert keys == sorted(keys)


def test_empty_append_still_makes_a_snapshot(catalog: SqlCatalog, table: Table) -> None:
    with table.transaction() as txn:
        append_sorted(txn, table.io, rows(0, 0), SORT, {"k2.offsets": "x"})
    snapshot = table.refresh().current_snapshot()
    assert snapshot is not None and snapshot.summary["k2.offsets"] == "x"


def test_unpartitioned_table_falls_back_to_a_sorted_append(catalog: SqlCatalog, tmp_path: Path) -> None:
    plain = catalog.create_table("k2.plain", SCHEMA)
    with plain.transaction() as txn:
        append_sorted(txn, plain.io, _shuffled(50), SORT, {})
    (_, only), *rest = _files(plain.refresh())
    assert not rest
    keys = list(zip(*(only[c].to_pylist() for c in SORT), strict=True))
    assert keys == sorted(keys) and len(keys) == 50


def test_files_are_cut_in_small_row_groups_a_symbol_query_can_skip(catalog: SqlCatalog, table: Table) -> None:
    data = rows(0, 3 * ROW_GROUP_ROWS, symbols=("BHP",))  # one bucket
    with table.transaction() as txn:
        append_sorted(txn, table.io, data, SORT, {})
    task = max(table.refresh().scan().plan_files(), key=lambda t: t.file.record_count)
    meta = pq.ParquetFile(task.file.file_path.removeprefix("file://")).metadata
    assert task.file.record_count > ROW_GROUP_ROWS and meta.num_row_groups > 1
    assert all(meta.row_group(i).num_rows <= ROW_GROUP_ROWS for i in range(meta.num_row_groups))
