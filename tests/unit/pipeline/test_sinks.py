"""A sink's batch claims the Kafka range it was frozen with, whatever lands in between."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pytest

from k2.lake.errors import StaleWriterError
from k2.lake.writer import NO_OFFSET
from k2.pipeline.sinks import TableSink
from k2.types import Offsets

TOPIC = "k2.quotes"
TP = (TOPIC, 0)
SCHEMA = pa.schema([("v", pa.int64()), ("kafka_partition", pa.int32()), ("kafka_offset", pa.int64())])


class CasTable:
    """The TableWriter's contract, in memory: append only if the head sits at the batch's start."""

    name = "quotes"

    def __init__(self) -> None:
        self.head: Offsets = {}
        self.rows: list[int] = []

    def offsets(self) -> Offsets:
        return dict(self.head)

    def commit(self, rows: pa.Table, start: Offsets, end: Offsets) -> int:
        moved = {
            tp: self.head.get(tp, NO_OFFSET)
            for tp in end
            if self.head.get(tp, NO_OFFSET) != start.get(tp, NO_OFFSET)
        }
        if moved:
            raise StaleWriterError("k2.quotes", {tp: start.get(tp, NO_OFFSET) for tp in moved}, moved)
        self.rows.extend(rows.column("kafka_offset").to_pylist())
        self.head.update(end)
        return len(self.rows)


def _read(sink: TableSink, lo: int, hi: int) -> None:
    offsets = list(range(lo, hi))
    rows = pl.DataFrame(
        {"v": offsets, "kafka_partition": [0] * len(offsets), "kafka_offset": offsets},
        schema={"v": pl.Int64, "kafka_partition": pl.Int32, "kafka_offset": pl.Int64},
    )
    sink.add(TOPIC, rows, {0: hi})


def _sink(table: CasTable) -> TableSink:
    return TableSink(table, {TOPIC}, SCHEMA)  # type: ignore[arg-type]


def test_batches_in_a_row_each_start_where_the_one_before_ends() -> None:
    table = CasTable()
    sink = _sink(table)
    sink.reset([TP])
    _read(sink, 0, 10)
    first = sink.freeze()
    _read(sink, 10, 25)
    second = sink.freeze()  # frozen while the first is still in flight
    assert first is not None and second is not None
    assert (first.start, second.start) == ({TP: NO_OFFSET}, {TP: 10})
    sink.commit_batch(first)
    sink.commit_batch(second)
    assert table.rows == list(range(25)) and table.head == {TP: 25}


def test_a_commit_landing_after_a_reassignment_fences_the_batch_read_again() -> None:
    """The chaos run kill-broker/redis/15: a commit in flight when the partitions were lost landed
    after they came back; the batch read again from the old head then claimed [X, X) with the
    rows of [W0, X), and the table held 5,630 quotes twice."""
    table = CasTable()
    sink = _sink(table)
    sink.reset([TP])
    _read(sink, 0, 10)
    in_flight = sink.freeze()
    sink.reset([TP])  # partitions lost and assigned again: the head still says nothing committed
    _read(sink, 0, 10)  # read again from there
    again = sink.freeze()
    assert in_flight is not None and again is not None
    sink.commit_batch(in_flight)  # lands late
    with pytest.raises(StaleWriterError):
        sink.commit_batch(again)  # the fence: the runner re-seeks from the new head
    assert table.rows == list(range(10))
    sink.reset([TP])
    _read(sink, 0, 12)  # the re-seek reads from the head; the rows below it are not buffered
    batch = sink.freeze()
    assert batch is not None and batch.start == {TP: 10}
    sink.commit_batch(batch)
    assert table.rows == list(range(12))  # every offset once


def test_a_commit_of_the_last_assignment_landing_late_leaves_the_new_watermark_alone() -> None:
    """The order the Committer really uses: the next batch is frozen only after the late commit has
    landed. The late commit must not move the watermark the new assignment read, or the batch read
    again would start at the late commit's end and carry the rows below it a second time."""
    table = CasTable()
    sink = _sink(table)
    sink.reset([TP])
    _read(sink, 0, 10)
    late = sink.freeze()
    sink.reset([TP])  # partitions lost and assigned again before ``late`` landed
    _read(sink, 0, 10)
    assert late is not None
    sink.commit_batch(late)  # lands now
    _read(sink, 10, 12)
    again = sink.freeze()
    assert again is not None and again.start == {TP: NO_OFFSET}
    with pytest.raises(StaleWriterError):
        sink.commit_batch(again)
    assert table.rows == list(range(10))
    sink.reset([TP])  # the runner's re-seek after the fence
    _read(sink, 0, 12)
    batch = sink.freeze()
    assert batch is not None
    sink.commit_batch(batch)
    assert table.rows == list(range(12))  # every offset once
