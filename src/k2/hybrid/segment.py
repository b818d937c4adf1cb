"""One partition's decoded tail: rows from a base offset up to the next offset to read.

A segment covers the Kafka range ``[base, end)`` of one topic-partition: every message in it was
read, decoded and validated, and the valid ones are rows (with their ``kafka_partition`` and
``kafka_offset`` lineage). Rows arrive as chunks, one per read; ``trim`` drops the rows a newer
Iceberg snapshot now covers, ``frames`` hands out immutable views for queries to filter outside
the cache's lock. Chunks merge like a binary counter (two neighbours of similar size become one),
so a segment holds O(log rows) chunks and each row is copied O(log rows) times, however small
the reads.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import polars as pl

from k2.types import TopicPartition

__all__ = ["TailSegment"]


@dataclass
class _Chunk:
    rows: pl.DataFrame
    first: int  # first offset this chunk's read covered
    end: int  # next offset after it
    nbytes: int


@dataclass
class TailSegment:
    """The decoded rows of one topic-partition over ``[base, end)``."""

    tp: TopicPartition
    base: int
    end: int = -1
    #: the read stopped short of the high watermark (cache bounds): rows beyond ``end`` were fetched
    #: and dropped, so the consumer must be repositioned at ``end`` before reading on
    paused: bool = False
    last_used: float = field(default_factory=time.monotonic)
    _chunks: list[_Chunk] = field(default_factory=list)
    _starts: deque[tuple[float, int]] = field(default_factory=deque)

    def __post_init__(self) -> None:
        if self.end < self.base:
            self.end = self.base

    @property
    def rows(self) -> int:
        return sum(c.rows.height for c in self._chunks)

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self._chunks)

    def append(self, rows: pl.DataFrame, first: int, end: int) -> None:
        """Add the rows of messages ``[first, end)`` (``first >= self.end``; invalid ones absent)."""
        if end <= self.end:
            return
        if rows.height:
            self._chunks.append(_Chunk(rows, first, end, int(rows.estimated_size())))
            chunks = self._chunks
            while len(chunks) > 1 and chunks[-2].rows.height <= 2 * chunks[-1].rows.height:
                b, a = chunks.pop(), chunks.pop()
                merged = pl.concat([a.rows, b.rows], rechunk=True)
                chunks.append(_Chunk(merged, a.first, b.end, int(merged.estimated_size())))
        self.end = end

    def covers(self, start: int) -> bool:
        """True if the rows from ``start`` on are all here (so a read can continue from ``end``)."""
        return self.base <= start <= self.end

    def reset(self, start: int) -> None:
        """Forget every row; the segment now starts (empty) at ``start``."""
        self._chunks.clear()
        self.base = self.end = start
        self.paused = False

    def request(self, start: int, now: float, grace_s: float) -> None:
        """Record that a query reads from ``start``; trim what no recent query needs any more.

        Rows below ``start`` are in Iceberg now, but a query that took an older snapshot a moment
        ago may still need them: the segment keeps rows from the oldest start requested within
        ``grace_s``.
        """
        self.last_used = now
        self._starts.append((now, start))
        while self._starts and now - self._starts[0][0] > grace_s and len(self._starts) > 1:
            self._starts.popleft()
        self.trim(min(s for _, s in self._starts))

    def trim(self, start: int) -> None:
        """Drop rows at offsets below ``start`` (``start`` is clamped to ``[base, end]``)."""
        start = min(max(start, self.base), self.end)
        if start == self.base:
            return
        kept: list[_Chunk] = []
        for chunk in self._chunks:
            if chunk.end <= start:
                continue
            if chunk.first < start:
                rows = chunk.rows.filter(pl.col("kafka_offset") >= start)
                chunk = _Chunk(rows, start, chunk.end, int(rows.estimated_size()))
            kept.append(chunk)
        self._chunks = kept
        self.base = start

    def frames(self, start: int | None = None) -> list[pl.DataFrame]:
        """Rows at offsets ``>= start`` (default: all), as chunks in offset order."""
        out = []
        for chunk in self._chunks:
            if start is not None and chunk.end <= start:
                continue
            rows = chunk.rows
            if start is not None and chunk.first < start:
                rows = rows.filter(pl.col("kafka_offset") >= start)
            out.append(rows)
        return out
