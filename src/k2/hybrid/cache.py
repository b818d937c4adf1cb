"""The incremental tail cache: decoded Kafka tails per partition, advanced and trimmed in place.

A query names, per partition, the offset its Iceberg snapshot ends at. The cache

1. positions a segment there: a new partition is assigned at that offset; a cached one is reused
   when it covers the offset (rows below it are trimmed: Iceberg has them now), else reset;
2. asks the broker for the high watermark (now, not a cached value), and
3. reads from where the segment stopped until the watermark: only the messages that arrived
   since the last query are fetched and decoded, never the whole tail again.

Bounds: decoded rows and their estimated bytes over all partitions (``HybridSettings``). When a
read would pass them, idle and least recently used partitions are dropped first; if that is not
enough the partition stops where it is (it is paused and repositioned later) and the answer covers
a gap-free prefix of the stream with ``truncated`` set and the reason given. Offsets deleted by
retention before Iceberg committed them are the other truncation: they cannot be read at all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import polars as pl
from confluent_kafka import Message

from k2.config.hybrid import HybridSettings
from k2.hybrid.decoder import TailDecoder
from k2.hybrid.segment import TailSegment
from k2.observability.logging import get_logger
from k2.observability.metrics import REGISTRY, Counter, Gauge
from k2.stream.timestamps import message_times_us
from k2.types import TopicPartition as TP

__all__ = ["COLD_SETUPS", "NEVER_COMMITTED", "PartitionTail", "TailCache", "TailRead", "TailSource"]

log = get_logger(__name__)

#: The start of a partition the snapshot never covered: read it from the broker's low watermark.
NEVER_COMMITTED = -1
_BATCH = 20_000

TAIL_ROWS = Gauge("k2_hybrid_tail_rows", "Decoded tail rows held in memory", registry=REGISTRY)
TAIL_BYTES = Gauge("k2_hybrid_tail_bytes", "Estimated bytes of the decoded tail", registry=REGISTRY)
TAIL_MESSAGES = Counter(
    "k2_hybrid_tail_messages_total", "Tail messages read and decoded", ["topic"], registry=REGISTRY
)
COLD_SETUPS = Counter(
    "k2_hybrid_cold_setups_total",
    "First-use set-ups of the hybrid engine: its Kafka clients and tail cache (clients), a partition "
    "the cache starts to hold, positioned at a snapshot's offset (partition). Warm-up pays them at start.",
    ["what"],
    registry=REGISTRY,
)
TRUNCATIONS = Counter(
    "k2_hybrid_truncations_total", "Tail reads that stopped short", ["reason"], registry=REGISTRY
)


class TailSource(Protocol):
    """What the cache needs from Kafka (``k2.hybrid.consumer.KafkaTail``; a fake in unit tests)."""

    def partition_count(self, topic: str) -> int: ...
    def high_watermarks(self, tps: list[TP]) -> dict[TP, int]: ...
    def low_watermarks(self, tps: list[TP]) -> dict[TP, int]: ...
    def cached_high_watermarks(self, tps: list[TP]) -> dict[TP, int]: ...
    def position(self, tp: TP, offset: int) -> None: ...
    def release(self, tps: list[TP]) -> None: ...
    def pause(self, tp: TP) -> None: ...
    def poll(self, max_messages: int, timeout_s: float) -> list[Message]: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class PartitionTail:
    """One partition's part of an answer: every message in ``[start, end)`` is represented.

    Attributes:
        start: first offset of the tail (the snapshot's offset for the partition).
        end: next offset after the tail; ``>= high_watermark`` unless ``truncated``.
        high_watermark: the high watermark when the read began (with ``wait=False``: as of the
            consumer's last fetch); ``end`` below it without ``truncated`` means "not read yet".
        frames: the valid rows of ``[start, end)`` in offset order (all symbols).
        truncated: why the tail does not reach the high watermark (or skips offsets), if it does not.
    """

    tp: TP
    start: int
    end: int
    high_watermark: int
    frames: list[pl.DataFrame]
    truncated: str | None = None


@dataclass(frozen=True)
class TailRead:
    parts: dict[TP, PartitionTail] = field(default_factory=dict)

    @property
    def truncated(self) -> bool:
        return any(p.truncated for p in self.parts.values())

    @property
    def reasons(self) -> list[str]:
        return [p.truncated for p in self.parts.values() if p.truncated]


class TailCache:
    """Decoded tails of the partitions queries touch (thread-safe).

    Args:
        settings: bounds and timings.
        source: the Kafka side.
        decoder: decode + validate, as the pipeline does.
        kinds: topic -> tick kind ("trades"/"quotes") of every topic the cache may read.
    """

    def __init__(
        self,
        settings: HybridSettings,
        source: TailSource,
        decoder: TailDecoder,
        kinds: dict[str, str],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.source = source
        self.decoder = decoder
        self.kinds = kinds
        self._clock = clock
        self._segments: dict[TP, TailSegment] = {}
        self._full: dict[TP, str] = {}  # partitions that stopped short, and which bound stopped them
        self._lock = threading.RLock()

    # -- the read -----------------------------------------------------------------------------
    def read(self, starts: dict[TP, int], *, wait: bool = True) -> TailRead:
        """The tail of each partition from its start offset.

        With ``wait`` the tail reaches (at least) the high watermark the broker reports now: a
        tick acknowledged before the call is in the answer. Without it, the answer stops where
        the cache has decoded so far (the prefetch thread keeps that close behind), costing no
        round trip; a partition the cache does not hold yet is still read up to the watermark.

        Raises:
            TailReadError: Kafka did not answer.
        """
        with self._lock:
            now = self._clock()
            self._evict(now, keep=set(starts))
            moving = [tp for tp, start in starts.items() if self._moves(tp, start)]
            if wait or moving:
                wait = True
                highs = self.source.high_watermarks(list(starts))
            else:
                highs = self.source.cached_high_watermarks(list(starts))
            lows = self.source.low_watermarks(moving) if moving else {}
            begins: dict[TP, int] = {}
            lost: dict[TP, str] = {}
            for tp, start in starts.items():
                lo = lows.get(tp)
                if start == NEVER_COMMITTED:  # the snapshot never covered it: from the oldest kept
                    seg = self._segments.get(tp)
                    begin = lo if lo is not None or seg is None else seg.base
                    begin = 0 if begin is None else begin
                elif lo is not None and start < lo:
                    begin = lo
                    lost[tp] = (
                        f"retention: offsets {start}..{lo - 1} of {tp[0]}[{tp[1]}] were deleted "
                        "before Iceberg committed them"
                    )
                    TRUNCATIONS.labels("retention").inc()
                else:
                    begin = start
                begins[tp] = begin
                self._prepare(tp, begin, now)
            if wait:
                self._catch_up({tp: highs[tp] for tp in starts}, set(starts))
            parts = {}
            for tp, begin in begins.items():
                seg = self._segments[tp]
                high = max(highs[tp], seg.end)
                reason = lost.get(tp) or self._reason(seg, high)
                parts[tp] = PartitionTail(tp, begin, seg.end, high, seg.frames(begin), reason)
            self._publish_gauges()
            return TailRead(parts)

    def _moves(self, tp: TP, start: int) -> bool:
        """True if the partition's segment must be (re)positioned for a read from ``start``."""
        seg = self._segments.get(tp)
        return seg is None or (start != NEVER_COMMITTED and not seg.covers(start))

    def _prepare(self, tp: TP, begin: int, now: float) -> None:
        seg = self._segments.get(tp)
        if seg is None:
            self._make_room_for_partition(keep={tp})
            seg = self._segments[tp] = TailSegment(tp, begin)
            self.source.position(tp, begin)
            COLD_SETUPS.labels("partition").inc()
        elif not seg.covers(begin):
            seg.reset(begin)
            self._full.pop(tp, None)
            self.source.position(tp, begin)
        seg.request(begin, now, self.settings.trim_grace_s)  # trims what Iceberg holds now
        if seg.paused and self._room():
            seg.paused = False  # rows beyond `end` were dropped when it paused: fetch them again
            self._full.pop(tp, None)
            self.source.position(tp, seg.end)

    def _catch_up(self, high: dict[TP, int], keep: set[TP]) -> None:
        """Read until every requested partition reaches its high watermark, is full, or time is up."""
        for tp in high:
            if self._full.get(tp) == "read_timeout":
                del self._full[tp]  # a new attempt: its outcome is the one to report
        deadline = self._clock() + self.settings.read_timeout_s
        timeout = 0.0  # first drain what librdkafka already prefetched, without waiting
        while True:
            behind = [
                tp for tp, hi in high.items() if self._segments[tp].end < hi and not self._segments[tp].paused
            ]
            if not behind:
                return
            if self._clock() > deadline:
                for tp in behind:
                    self._full[tp] = "read_timeout"
                TRUNCATIONS.labels("read_timeout").inc()
                return
            messages = self.source.poll(_BATCH, timeout)
            if messages:
                self._ingest(messages, keep)
            timeout = self.settings.poll_timeout_s

    def pump(self) -> int:
        """Decode whatever the consumer has prefetched, without waiting (keeps later reads short)."""
        with self._lock:
            # Without queries nothing else drops idle partitions: the tails warm-up read grew
            # with every tick until the cache's bounds (issue #17: the server's RSS).
            self._evict(self._clock(), keep=set())
            messages = self.source.poll(_BATCH, 0.0)
            if messages:
                self._ingest(messages, set())
            return len(messages)

    # -- appending ----------------------------------------------------------------------------
    def _ingest(self, messages: list[Message], keep: set[TP]) -> None:
        by_topic: dict[str, list[Message]] = {}
        for m in messages:
            by_topic.setdefault(m.topic() or "", []).append(m)
        for topic, batch in by_topic.items():
            kind = self.kinds.get(topic)
            if kind is not None:
                self._ingest_topic(topic, kind, batch, keep)

    def _ingest_topic(self, topic: str, kind: str, batch: list[Message], keep: set[TP]) -> None:
        parts = np.fromiter((m.partition() for m in batch), dtype=np.int32, count=len(batch))
        offs = np.fromiter((m.offset() for m in batch), dtype=np.int64, count=len(batch))
        take = np.zeros(len(batch), dtype=bool)
        ends: dict[int, tuple[int, int]] = {}
        for p in np.unique(parts).tolist():
            seg = self._segments.get((topic, p))
            if seg is None or seg.paused:
                continue  # released, or full: repositioned at its end before the next read
            mine = (parts == p) & (offs >= seg.end)  # anything below `end` is a stale prefetch
            count = int(mine.sum())
            if not count:
                continue
            room = self._room_rows(keep | {(topic, p)})
            if room < count or not self._room_bytes(keep | {(topic, p)}):
                idx = np.flatnonzero(mine)
                mine[idx[max(room, 0) :]] = False
                count = int(mine.sum())
                self._pause(seg, "max_tail_messages" if room < len(idx) else "max_tail_bytes")
            if count:
                take |= mine
                sel = offs[mine]
                ends[p] = (int(sel.min()), int(sel.max()) + 1)
        if not ends:
            return
        idx = np.flatnonzero(take)
        chosen = [batch[i] for i in idx.tolist()]
        values = [m.value() for m in chosen]
        decoded = self.decoder.decode(kind, values, parts[idx], offs[idx], message_times_us(chosen))
        TAIL_MESSAGES.labels(topic).inc(len(values))
        rows = decoded.rows
        split = (
            rows.partition_by("kafka_partition", as_dict=True, maintain_order=True) if len(ends) > 1 else None
        )
        for p, (first, end) in ends.items():
            seg = self._segments[(topic, p)]
            part_rows = rows if split is None else split.get((p,), rows.clear())
            seg.append(part_rows, first, end)

    def _pause(self, seg: TailSegment, bound: str) -> None:
        seg.paused = True
        self.source.pause(seg.tp)
        self._full[seg.tp] = bound
        TRUNCATIONS.labels(bound).inc()
        log.warning("tail cache full; answering a prefix", topic=seg.tp[0], partition=seg.tp[1], bound=bound)

    def _reason(self, seg: TailSegment, high: int) -> str | None:
        """Why a partition's tail stops before ``high`` (None: it does not, or it was not waited for)."""
        bound = self._full.get(seg.tp)
        if bound is None or seg.end >= high:
            return None
        topic, p = seg.tp
        if bound == "read_timeout":
            return (
                f"read_timeout: {topic}[{p}] reached offset {seg.end} of {high} within "
                f"{self.settings.read_timeout_s:g} s (hybrid.read_timeout_s)"
            )
        limit = (
            self.settings.max_tail_messages if bound == "max_tail_messages" else self.settings.max_tail_bytes
        )
        return (
            f"{bound}: the cached tail reached hybrid.{bound}={limit}; {topic}[{p}] is answered "
            f"up to offset {seg.end} of {high}"
        )

    # -- bounds -------------------------------------------------------------------------------
    def _totals(self) -> tuple[int, int]:
        rows = nbytes = 0
        for seg in self._segments.values():
            rows += seg.rows
            nbytes += seg.nbytes
        return rows, nbytes

    def _room(self) -> bool:
        rows, nbytes = self._totals()
        return rows < self.settings.max_tail_messages and nbytes < self.settings.max_tail_bytes

    def _room_rows(self, keep: set[TP]) -> int:
        rows, _ = self._totals()
        if rows >= self.settings.max_tail_messages:
            self._evict_lru(keep)
            rows, _ = self._totals()
        return self.settings.max_tail_messages - rows

    def _room_bytes(self, keep: set[TP]) -> bool:
        _, nbytes = self._totals()
        if nbytes >= self.settings.max_tail_bytes:
            self._evict_lru(keep)
            _, nbytes = self._totals()
        return nbytes < self.settings.max_tail_bytes

    def _evict_lru(self, keep: set[TP]) -> None:
        """Drop least recently used partitions (not in ``keep``) until the bounds hold again."""
        for tp in sorted(
            (t for t in self._segments if t not in keep), key=lambda t: self._segments[t].last_used
        ):
            if self._room():
                return
            self._drop(tp)

    def _make_room_for_partition(self, keep: set[TP]) -> None:
        while len(self._segments) >= self.settings.max_partitions:
            victims = sorted(
                (t for t in self._segments if t not in keep), key=lambda t: self._segments[t].last_used
            )
            if not victims:
                return
            self._drop(victims[0])

    def _evict(self, now: float, keep: set[TP]) -> None:
        idle = [
            tp
            for tp, seg in self._segments.items()
            if tp not in keep and now - seg.last_used > self.settings.idle_partition_s
        ]
        for tp in idle:
            self._drop(tp)

    def _drop(self, tp: TP) -> None:
        self._segments.pop(tp, None)
        self._full.pop(tp, None)
        self.source.release([tp])

    def _publish_gauges(self) -> None:
        rows, nbytes = self._totals()
        TAIL_ROWS.set(rows)
        TAIL_BYTES.set(nbytes)

    # -- introspection and life cycle ---------------------------------------------------------
    def stats(self) -> dict[str, int]:
        """Partitions, rows and estimated bytes held (for /health-like displays and tests)."""
        with self._lock:
            rows, nbytes = self._totals()
            return {"partitions": len(self._segments), "rows": rows, "bytes": nbytes}

    def close(self) -> None:
        with self._lock:
            self._segments.clear()
            self.source.close()
