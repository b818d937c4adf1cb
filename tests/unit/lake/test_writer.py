"""The compare-and-set append: offsets in snapshots, fencing of stale writers, concurrent partitions."""

from __future__ import annotations

import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.table import Table

from k2.lake.errors import StaleWriterError
from k2.lake.offsets import decode_offsets, encode_offsets, table_offsets
from k2.lake.writer import NO_OFFSET, TableWriter
from tests.unit.lake.conftest import rows

T = "k2.trades"


def test_offsets_round_trip() -> None:
    offsets = {(T, 0): 10, (T, 3): 7, ("k2.quotes", 1): 0}
    assert decode_offsets(encode_offsets(offsets)) == offsets


def test_commit_stores_offsets_and_sorts(catalog: SqlCatalog, table: Table) -> None:
    writer = TableWriter(catalog, "k2.ticks", sort_by=("symbol", "exchange_ts"))
    assert writer.offsets() == {}
    writer.commit(rows(0, 10), {(T, 0): NO_OFFSET}, {(T, 0): 10})
    writer.commit(rows(10, 5), {(T, 0): 10}, {(T, 0): 15})
    assert table_offsets(table.refresh()) == {(T, 0): 15}
    data = table.refresh().scan().to_arrow()
    assert data.num_rows == 15
    assert sorted(data.column("kafka_offset").to_pylist()) == list(range(15))


def test_stale_writer_is_fenced_and_writes_nothing(catalog: SqlCatalog, table: Table) -> None:
    a = TableWriter(catalog, "k2.ticks")
    b = TableWriter(catalog, "k2.ticks")
    a.commit(rows(0, 10), {(T, 0): NO_OFFSET}, {(T, 0): 10})
    # b believed the partition was fresh: it must not append the same range again
    with pytest.raises(StaleWriterError) as info:
        b.commit(rows(0, 10), {(T, 0): NO_OFFSET}, {(T, 0): 10})
    assert info.value.found == {(T, 0): 10}
    assert table.refresh().scan().to_arrow().num_rows == 10


def test_concurrent_writers_of_different_partitions_both_commit(catalog: SqlCatalog, table: Table) -> None:
    """A stale table head (another partition's commit) is a conflict to retry, not a fence."""
    a = TableWriter(catalog, "k2.ticks")
    b = TableWriter(catalog, "k2.ticks")
    a.commit(rows(0, 10, partition=0), {(T, 0): NO_OFFSET}, {(T, 0): 10})
    # b's table object predates a's commit; its own partition's start is still right
    b.commit(rows(100, 10, partition=1), {(T, 1): NO_OFFSET}, {(T, 1): 110})
    assert table_offsets(table.refresh()) == {(T, 0): 10, (T, 1): 110}
    assert table.refresh().scan().to_arrow().num_rows == 20


def test_empty_commit_advances_offsets(catalog: SqlCatalog, table: Table) -> None:
    writer = TableWriter(catalog, "k2.ticks")
    writer.commit(rows(0, 0), {(T, 0): NO_OFFSET}, {(T, 0): 42})
    assert writer.offsets() == {(T, 0): 42}
    assert table.refresh().scan().to_arrow().num_rows == 0
