"""The ingest pipeline's figures on the API's ``/metrics``, for Prometheus and Grafana.

``k2 ingest`` runs without an HTTP server; its state reaches other processes through the status
file it rewrites every second (``k2.resilience.status``). This collector reads that file at each
scrape and exports it as ``k2_ingest_*`` series, so one scrape target (the API) carries the
pipeline too (deploy/grafana/k2-dashboard.json plots them). Without a status file only
``k2_ingest_up 0`` is exported. The names differ from the pipeline's own in-process metrics
(``k2_pipeline_*``, ``k2_lake_*``), which describe one process and would clash.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from k2.api.status import Ingest, Quality, read_pipeline_status
from k2.resilience.levels import Level

__all__ = ["IngestCollector", "ingest_registry"]

_BREAKER = {"closed": 0, "half_open": 1, "open": 2}


class IngestCollector(Collector):
    """Reads ``<data_dir>/status/ingest.json`` at every collect."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def collect(self) -> Iterator[Metric]:
        status = read_pipeline_status(self.data_dir)
        up = GaugeMetricFamily("k2_ingest_up", "1 while the ingest process that writes the status file runs")
        up.add_metric([], 1.0 if status.ingest is not None and status.ingest.running else 0.0)
        yield up
        if status.ingest is not None:
            yield from _ingest(status.ingest)
            yield from _quality(status.quality)


def _gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc)
    if value is not None:
        family.add_metric([], value)
    return family


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc + " (since the ingest process started)", value=value)


def _ingest(ing: Ingest) -> Iterator[Metric]:
    yield _gauge(
        "k2_ingest_status_age_seconds", "Seconds since the pipeline last wrote its status", ing.age_s
    )
    yield _counter("k2_ingest_messages", "Messages read from Kafka", ing.messages)
    yield _counter("k2_ingest_written", "Rows written to Iceberg", ing.written)
    yield _counter("k2_ingest_commits", "Checkpoints committed (rows, gaps and offsets)", ing.commits)
    yield _counter("k2_ingest_deferred", "Ticks deferred to the spill topics", ing.deferred)
    yield _counter("k2_ingest_spilled", "Deferred ticks acknowledged by the spill topics", ing.spilled)
    yield _counter("k2_ingest_backfilled", "Ticks back-filled from the spill topics", ing.backfilled)
    yield _gauge("k2_ingest_commit_last_seconds", "Duration of the last commit", ing.commit_last_s)
    yield _gauge("k2_ingest_freshness_seconds", "Seconds since the last commit", ing.freshness_s)
    yield _gauge(
        "k2_ingest_degradation_level",
        "0 normal, 1 soft, 2 graceful, 3 aggressive, 4 circuit break",
        float(Level[ing.level]) if ing.level in Level.__members__ else None,
    )
    yield _gauge("k2_ingest_stalled", "1 while a failed dependency pauses consumption", float(ing.stalled))
    lag = GaugeMetricFamily("k2_ingest_lag", "High watermark minus position", labels=["topic", "partition"])
    for p in ing.lags:
        lag.add_metric([p.topic, str(p.partition)], p.lag)
    yield lag
    breakers = GaugeMetricFamily("k2_ingest_breaker_state", "0 closed, 1 half-open, 2 open", labels=["name"])
    for b in ing.breakers:
        breakers.add_metric([b.name], _BREAKER.get(b.state, 2))
    yield breakers


def _quality(q: Quality) -> Iterator[Metric]:
    per_kind = (
        ("k2_ingest_gaps_recorded", "Gaps recorded", q.gaps_recorded, True),
        ("k2_ingest_gaps_recovered", "Gaps recovered by late ticks", q.gaps_recovered, True),
        ("k2_ingest_duplicates", "Ticks dropped as duplicates", q.duplicates, True),
        ("k2_ingest_gaps_open", "Recorded gaps not recovered", q.gaps_open, False),
        ("k2_ingest_holes_pending", "Symbols with a hole not yet recorded", q.holes_pending, False),
    )
    for name, doc, values, counter in per_kind:
        family: CounterMetricFamily | GaugeMetricFamily = (
            CounterMetricFamily(name, doc, labels=["kind"])
            if counter
            else GaugeMetricFamily(name, doc, labels=["kind"])
        )
        for kind, value in values.items():
            family.add_metric([kind], value)
        yield family
    yield _counter("k2_ingest_dead_letters", "Messages sent to the dead-letter topic", q.dead_letters)


def ingest_registry(data_dir: Path) -> CollectorRegistry:
    """A registry of its own for one app (two apps in one process read two data directories)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(IngestCollector(data_dir))
    return registry
