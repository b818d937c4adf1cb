"""The state package's Prometheus metrics, on K2's one registry.

Built on first use (not at import) and then shared, so importing k2.state registers nothing and a
second tracker reuses the same collectors.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from k2.observability.metrics import REGISTRY, Counter, Gauge, Histogram

__all__ = ["StateMetrics", "state_metrics"]


@dataclass(frozen=True)
class StateMetrics:
    verdicts: Counter
    gaps_open: Gauge
    holes_open: Gauge
    oldest_pending: Gauge
    gaps_recorded: Counter
    gap_detection: Histogram
    gap_ticks: Counter
    gap_recoveries: Counter
    dedup_duplicates: Counter
    bloom_positives: Counter
    bloom_false_positives: Counter


@cache
def state_metrics() -> StateMetrics:
    """The collectors, registered on ``REGISTRY`` once per process."""
    return StateMetrics(
        verdicts=Counter(
            "k2_sequence_verdicts", "Ticks classified, by verdict.", ["kind", "verdict"], registry=REGISTRY
        ),
        gaps_open=Gauge(
            "k2_gaps_open", "Recorded gaps not yet recovered, over the keys this process has seen.", ["kind"],
            registry=REGISTRY,
        ),
        holes_open=Gauge(
            "k2_gap_holes_open", "Symbols with a hole not yet recorded as a gap (pending), per feed.", ["kind"],
            registry=REGISTRY,
        ),
        oldest_pending=Gauge(
            "k2_gap_oldest_pending_seconds",
            "Exchange-clock age of the oldest hole not yet recorded, over this process's partitions.", ["kind"],
            registry=REGISTRY,
        ),
        gaps_recorded=Counter("k2_gaps_recorded", "Gaps recorded (opened events).", ["kind"], registry=REGISTRY),
        gap_detection=Histogram(
            "k2_gap_detection_seconds", "Exchange-clock seconds from a hole's arrival to its recorded gap.",
            ["kind"], buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 2.5, 3, 5, 10, 30, 60, 300),
            registry=REGISTRY,
        ),
        gap_ticks=Counter("k2_gap_ticks", "Sequences missing in recorded gaps.", ["kind"], registry=REGISTRY),
        gap_recoveries=Counter(
            "k2_gap_recoveries", "Recorded gaps filled completely by late ticks.", ["kind"], registry=REGISTRY
        ),
        dedup_duplicates=Counter(
            "k2_dedup_duplicates", "Ticks dropped as duplicate message ids.", ["kind"], registry=REGISTRY
        ),
        bloom_positives=Counter(
            "k2_bloom_positives", "Ids the Bloom filter could not rule out (checked exactly).", registry=REGISTRY
        ),
        bloom_false_positives=Counter(
            "k2_bloom_false_positives", "Bloom positives the exact store did not confirm.", registry=REGISTRY
        ),
    )  # fmt: skip
