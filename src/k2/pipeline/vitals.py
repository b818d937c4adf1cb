"""The live figures the status file carries beyond the degradation state: what the dashboard plots.

Prometheus metrics live in the ingest process; the API (``GET /v1/status``) runs in another one
and reads the status file. So the governor adds, at each write, the few figures an operator
watches: ingest rate, lag per partition, the last commit's latency and time (freshness), the
sequence checks' gap counters and the newest dead letters. All of it is cheap: counters already
kept, and a handful of samples of this process's registry.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from k2.observability.metrics import REGISTRY
from k2.types import TICK_KINDS

__all__ = ["RateMeter", "commit_facts", "quality_facts"]

#: (metric, status key) of the state checks' per-kind figures (``k2.state.metrics``).
_QUALITY = (
    ("k2_gaps_recorded_total", "gaps_recorded"),
    ("k2_gap_recoveries_total", "gaps_recovered"),
    ("k2_gaps_open", "gaps_open"),
    ("k2_gap_holes_open", "holes_pending"),
    ("k2_dedup_duplicates_total", "duplicates"),
)


class RateMeter:
    """Events per second over the last ``window_s``, from a running total sampled now and then."""

    def __init__(self, window_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s = window_s
        self._clock = clock
        self._samples: deque[tuple[float, int]] = deque()

    def rate(self, total: int) -> float:
        """Record ``total`` now; the rate since the oldest sample still in the window."""
        now = self._clock()
        self._samples.append((now, total))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window_s:
            self._samples.popleft()
        first_t, first_n = self._samples[0]
        return (total - first_n) / (now - first_t) if now > first_t else 0.0


def commit_facts(count: int, last_s: float | None, last_at: float | None) -> dict[str, Any]:
    """The commit counter, the last commit's latency and its wall-clock time (ISO 8601, UTC)."""
    at = None if last_at is None else datetime.fromtimestamp(last_at, UTC).isoformat(timespec="milliseconds")
    return {"count": count, "last_s": None if last_s is None else round(last_s, 4), "last_at": at}


def quality_facts(dead_letters: int, latest: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Gap and duplicate counters per tick kind (this process's registry) and the newest dead letters."""
    # one pass over only these metrics' collectors: get_sample_value collects the whole registry per
    # call, and ten such calls were a tenth of the ingest loop's thread (py-spy, issue #17)
    keys = dict(_QUALITY)
    out: dict[str, Any] = {key: dict.fromkeys(TICK_KINDS, 0) for key in keys.values()}
    for family in REGISTRY.restricted_registry(list(keys)).collect():
        for sample in family.samples:
            key, kind = keys.get(sample.name), sample.labels.get("kind")
            if key is not None and kind in out[key]:
                out[key][kind] = int(sample.value)
    out["dead_letters"] = dead_letters
    out["latest_dead_letters"] = list(latest)
    return out
