"""One table's buffer of uncommitted rows and the Kafka offsets they cover.

Every sink keeps its own watermark (the offsets its table's head covers). After a crash the
consumer restarts from the lowest watermark of all stages, and each sink keeps only the rows at or
beyond its own: a table that committed before the crash is not written twice, one that did not is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import polars as pl
import pyarrow as pa

from k2.lake.stamp import without_stamp
from k2.lake.writer import NO_OFFSET, TableWriter
from k2.types import Offsets, TopicPartition

__all__ = ["SinkBatch", "TableSink"]


@dataclass(frozen=True)
class SinkBatch:
    """Rows and the Kafka range [start, end) they cover, taken out of a sink for one commit.

    ``start`` is fixed when the batch is frozen (the end of the batch frozen before it, or the
    table's head when the partitions were assigned), never read again at commit time: a commit
    frozen before a rebalance and landing after it moves the head, and the batches read again
    since must then fail their compare-and-set instead of claiming the range the other one wrote.
    """

    frames: list[pl.DataFrame]
    end: Offsets
    start: Offsets = field(default_factory=dict)
    #: the sink's assignment when frozen: a batch of an earlier one that lands late must not move the
    #: watermark the current assignment read (its rows were read again from there)
    generation: int = 0

    @property
    def rows(self) -> int:
        return sum(f.height for f in self.frames)


class TableSink:
    def __init__(self, writer: TableWriter, topics: set[str], arrow_schema: pa.Schema) -> None:
        self.writer = writer
        self.topics = topics
        self.schema = without_stamp(arrow_schema)  # the writer stamps the rows when it commits
        self.committed: Offsets = {}
        self._pending: list[pl.DataFrame] = []
        self._end: Offsets = {}
        self._frontier: Offsets = {}  # the end of the last batch frozen since the assignment
        self._generation = 0  # bumped by each reset (assignment)
        self.rows = 0
        self._last_commit = time.monotonic()

    @property
    def name(self) -> str:
        return self.writer.name

    def reset(self, partitions: list[TopicPartition]) -> Offsets:
        """Drop the buffer and re-read the table's watermark for these partitions."""
        self.clear()
        head = self.writer.offsets()
        self.committed = {tp: head[tp] for tp in partitions if tp in head and tp[0] in self.topics}
        self._frontier = {}
        self._generation += 1
        return self.committed

    def watermark(self, tp: TopicPartition) -> int:
        return self.committed.get(tp, NO_OFFSET)

    def add(self, topic: str, rows: pl.DataFrame, end: dict[int, int]) -> int:
        """Buffer rows (with kafka_partition/kafka_offset) read from ``topic`` up to ``end`` per partition.

        Returns the rows buffered: rows below the table's watermark (a replay after a crash) are not.
        """
        marks = {p: self.watermark((topic, p)) for p in end}
        if rows.height and any(m > NO_OFFSET for m in marks.values()):
            floor = pl.col("kafka_partition").replace_strict(marks, default=NO_OFFSET, return_dtype=pl.Int64)
            rows = rows.filter(pl.col("kafka_offset") >= floor)
        if rows.height:
            self._pending.append(rows)
            self.rows += rows.height
        for p, offset in end.items():
            tp = (topic, p)
            if offset > self.watermark(tp):
                self._end[tp] = max(self._end.get(tp, NO_OFFSET), offset)
        return rows.height

    @property
    def dirty(self) -> bool:
        return bool(self._end)

    def freeze(self, *, advance_only_after_s: float | None = None) -> SinkBatch | None:
        """Take the buffer out for a commit (the live buffer starts empty); None if nothing to commit.

        With ``advance_only_after_s``, a buffer without rows is taken (to move the watermark) only
        if the last commit is older than that: a table that rarely gets rows (the gap table) then
        costs no snapshot per checkpoint, at the price of a longer replay after a crash.
        """
        if not self._end and not self._pending:
            return None
        if (
            advance_only_after_s is not None
            and not self._pending
            and time.monotonic() - self._last_commit < advance_only_after_s
        ):
            return None
        start = {tp: self._frontier.get(tp, self.watermark(tp)) for tp in self._end}
        batch = SinkBatch(list(self._pending), dict(self._end), start, self._generation)
        self._frontier.update(self._end)
        self.clear()
        return batch

    def commit_batch(self, batch: SinkBatch) -> int:
        """Append a frozen batch (possibly no rows, to advance offsets); returns the snapshot id.

        Raises:
            StaleWriterError: another writer owns this range now; nothing was written.
        """
        start = {tp: batch.start.get(tp, self.watermark(tp)) for tp in batch.end}
        frame = pl.concat(batch.frames, how="vertical_relaxed") if batch.frames else None
        arrow = (
            frame.to_arrow().select(self.schema.names).cast(self.schema)
            if frame is not None
            else self.schema.empty_table()
        )
        snapshot = self.writer.commit(arrow, start, batch.end)
        if batch.generation == self._generation:
            self.committed.update(batch.end)
        self._last_commit = time.monotonic()
        return snapshot

    def commit(self, *, advance_only_after_s: float | None = None) -> int | None:
        """Freeze and commit at once (for callers that need no overlap)."""
        batch = self.freeze(advance_only_after_s=advance_only_after_s)
        return None if batch is None else self.commit_batch(batch)

    def clear(self) -> None:
        self._pending.clear()
        self._end.clear()
        self.rows = 0
