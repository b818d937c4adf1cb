"""The measured signals that drive the degradation level, and the cheap probes that measure them.

Three signals, each answering "is the pipeline keeping up?" from a different side:

* ``lag``: messages between the consumer's position and the high watermark of the *source*
  topics (never the spill topics: a back-fill backlog must not raise the level that gates it).
* ``batch_ratio``: the share of wall time spent working (decode … commit) rather than waiting in
  ``consume()``, over a sliding window. Near 1 the pipeline has no slack left; lag will follow.
* ``rss_bytes``: this process's resident memory (psutil), not the host's: the budget that an
  OOM-kill enforces.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["LoadMeter", "RssProbe", "Signals", "WatermarkConsumer", "consumer_lag", "partition_lags"]

# librdkafka's OFFSET_INVALID: no position yet / no cached watermark yet.
_INVALID = -1001


@dataclass(frozen=True, slots=True)
class Signals:
    """One observation; ``None`` means "not measured this time" and neither raises nor holds a level."""

    lag: int | None = None
    batch_ratio: float | None = None
    rss_bytes: int | None = None


class LoadMeter:
    """Busy share of wall time over a sliding window.

    The pipeline reports each stretch of work (processing a batch, committing) with ``add_busy``;
    time spent inside ``consume()`` is idle time. Measuring against wall time rather than a nominal
    batch interval means the ratio needs no tuning: an idle pipeline reads ~0, one that can no
    longer keep up reads ~1 whatever its batch size.
    """

    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._started = clock()
        self._spans: deque[tuple[float, float]] = deque()  # (end time, busy seconds)
        self._busy = 0.0

    def add_busy(self, seconds: float) -> None:
        """Record ``seconds`` of work that ended now."""
        if seconds <= 0:
            return
        self._spans.append((self._clock(), seconds))
        self._busy += seconds

    def ratio(self) -> float:
        """Busy seconds in the window divided by the window (or by the time since start, if shorter)."""
        now = self._clock()
        horizon = now - self.window_s
        while self._spans and self._spans[0][0] <= horizon:
            self._busy -= self._spans.popleft()[1]
        if not self._spans:
            self._busy = 0.0  # no float residue once the window is empty
            return 0.0
        span = min(self.window_s, now - self._started)
        return min(1.0, self._busy / span) if span > 0 else 1.0


class RssProbe:
    """Resident set size of this process; the psutil handle is created on first use, not at import."""

    def __init__(self) -> None:
        self._process: Any = None

    def __call__(self) -> int:
        if self._process is None:
            import psutil

            self._process = psutil.Process()
        return int(self._process.memory_info().rss)


class WatermarkConsumer(Protocol):
    """The two calls of ``confluent_kafka.Consumer`` that ``consumer_lag`` needs."""

    def position(self, partitions: list[Any]) -> list[Any]: ...

    def get_watermark_offsets(self, partition: Any, timeout: float = ..., cached: bool = ...) -> Any: ...


def partition_lags(consumer: WatermarkConsumer, partitions: Iterable[Any]) -> dict[tuple[str, int], int]:
    """Messages not yet read per partition: high watermark - position.

    Uses the watermarks librdkafka caches from fetch responses, so it makes no broker round trip
    and can run every loop iteration. Partitions with no position or no cached watermark yet (just
    assigned, nothing fetched) are left out until the first fetch answers.
    """
    parts = list(partitions)
    if not parts:
        return {}
    lags: dict[tuple[str, int], int] = {}
    for tp in consumer.position(parts):
        if tp.offset < 0:
            continue
        marks = consumer.get_watermark_offsets(tp, cached=True)
        if marks is None:
            continue
        high = marks[1]
        if high == _INVALID or high < 0:
            continue
        lags[(tp.topic, tp.partition)] = max(0, high - tp.offset)
    return lags


def consumer_lag(consumer: WatermarkConsumer, partitions: Iterable[Any]) -> int:
    """Messages not yet read on ``partitions``, summed (see ``partition_lags``)."""
    return sum(partition_lags(consumer, partitions).values())
