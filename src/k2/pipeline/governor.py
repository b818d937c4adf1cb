"""Backpressure for the ingest loop, and what ``k2 status`` shows of it (docs/resilience.md).

Each loop the governor measures lag, busy ratio and memory; the degradation level follows them and
decides which tiers of symbols are deferred to the spill, the batch size, the commit interval and
which partitions run. It also keeps the consumer paused while the committer reports a stall (a
dependency failed) and writes the status file. It decides nothing about commits: the committer
tells it when a stall begins and ends (``StallListener``), so the two never disagree on "stalled".
"""

from __future__ import annotations

import dataclasses
from typing import Any

from confluent_kafka import KafkaException

from k2.config import ResilienceSettings, Settings
from k2.lake.errors import LakeError, StaleWriterError
from k2.observability.logging import get_logger
from k2.observability.metrics import REGISTRY, Gauge
from k2.pipeline.batch import PipelineStats
from k2.pipeline.checkpoint import Checkpoint
from k2.pipeline.consumer import KafkaConsumer
from k2.pipeline.errors import DeadLetterDeliveryError
from k2.pipeline.vitals import RateMeter, commit_facts, quality_facts
from k2.resilience.breaker import BreakerBoard
from k2.resilience.degradation import DegradationManager, LevelChange
from k2.resilience.errors import SpillDeliveryError
from k2.resilience.flow import FlowControl
from k2.resilience.levels import Level
from k2.resilience.signals import LoadMeter, RssProbe, Signals, partition_lags
from k2.resilience.spill import Spill
from k2.resilience.status import StatusFile, status_path
from k2.resilience.tiers import PriorityTiers
from k2.state.errors import StaleStateError, StateStoreError
from k2.types import TopicPartition as TP

__all__ = ["Governor", "dependency_breakers"]

log = get_logger(__name__)

LAG = Gauge(
    "k2_pipeline_consumer_lag", "High watermark minus position", ["topic", "partition"], registry=REGISTRY
)


def dependency_breakers(settings: ResilienceSettings) -> BreakerBoard:
    """The breakers of the three dependencies a commit or a classification may wait out.

    A fence (``Stale…Error``) is not a failure of the dependency: another writer owns the range.
    """
    breakers = BreakerBoard(settings.breakers)
    breakers.get("iceberg", failure_types=(LakeError, OSError), ignore=(StaleWriterError,))
    breakers.get("state", failure_types=(StateStoreError, OSError), ignore=(StaleStateError,))
    breakers.get("kafka", failure_types=(DeadLetterDeliveryError, SpillDeliveryError, KafkaException))
    return breakers


class Governor:
    """Signals → degradation level → flow control, the stall's pause, and the status file."""

    def __init__(
        self,
        settings: Settings,
        *,
        consumer: KafkaConsumer,
        checkpoint: Checkpoint,
        spill: Spill,
        stats: PipelineStats,
        breakers: BreakerBoard,
        source_topics: set[str],
        spill_topics: set[str],
    ) -> None:
        r = settings.resilience
        self.consumer = consumer
        self.checkpoint = checkpoint
        self.spill = spill
        self.stats = stats
        self.breakers = breakers
        self.source_topics = source_topics
        self.degradation = DegradationManager(r)
        self.tiers = PriorityTiers(r)
        self.flow = FlowControl(spill_topics)
        self.meter = LoadMeter(r.ratio_window_s)
        self.rss = RssProbe()
        self.status_file = StatusFile(status_path(settings.data_dir))
        self.commit_interval_s = settings.lake.commit_interval_s
        self.lag = 0
        self.peak_lag = 0
        self.lags: dict[tuple[str, int], int] = {}  # per source partition, for the status file
        self.read_rate = RateMeter()
        self.write_rate = RateMeter()
        self.stalled = False
        self.stall_cause = ""

    # -- the loop's questions ---------------------------------------------------------------------
    def batch_size(self, base: int) -> int:
        """How many messages one poll may return at the current level."""
        return self.degradation.actions.batch_size(base)

    @property
    def deferring(self) -> bool:
        """Deferred work (spill back-fill, paused partitions) is still to come: the run is not idle."""
        return self.degradation.level != Level.NORMAL or bool(self.flow.paused)

    def observe(self) -> None:
        """Measure the signals, let the level follow them, and apply the level's flow control."""
        owned = self.consumer.assignment()
        source = [p for p in owned if p.topic in self.source_topics]
        lags = partition_lags(self.consumer, source)
        for (topic, partition), lag in lags.items():
            LAG.labels(topic, str(partition)).set(lag)
        self.lags = dict(lags)
        self.lag = sum(lags.values())
        self.peak_lag = max(self.peak_lag, self.lag)
        change = self.degradation.observe(
            Signals(lag=self.lag, batch_ratio=self.meter.ratio(), rss_bytes=self.rss())
        )
        if change is not None:
            self._level_changed(change)
        self.flow.apply(self.consumer, self.degradation.actions, stalled=self.stalled)
        if change is not None or self.status_file.due():
            self.write_status()

    def force(self, level: Level, reason: str) -> None:
        """Set the level by hand (``k2 ingest --level``); the usual rules take over from there."""
        change = self.degradation.force(level, reason)
        if change is not None:
            self._level_changed(change)

    def _level_changed(self, change: LevelChange) -> None:
        self.checkpoint.max_age_s = change.actions.commit_interval(self.commit_interval_s)
        self.status_file.record(change.previous.name, change.level.name, change.cause, change.detail)

    # -- partitions -------------------------------------------------------------------------------
    def assigned(self) -> None:
        """After ``consumer.assign``: new partitions start un-paused, so pause what must be."""
        self.flow.assigned(self.consumer, self.degradation.actions, stalled=self.stalled)

    def revoked(self, tps: list[TP]) -> None:
        self.flow.revoked(tps)

    # -- StallListener: the committer's verdicts ----------------------------------------------------
    def stall(self, exc: BaseException, *, wait: float, kept: bool, reseek: bool) -> None:
        """Pause every partition; counted and logged once per stall, re-applied on each retry."""
        if not self.stalled:
            self.stats.stalls += 1
            self.stall_cause = str(exc)
            log.warning(
                "dependency failed; consumption paused, work kept for a retry",
                error=str(exc),
                retry_in_s=round(wait, 2),
                commit_kept=kept,
                reseek=reseek,
            )
        self.stalled = True
        self.flow.apply(self.consumer, self.degradation.actions, stalled=True)
        self.write_status()

    def resume(self) -> None:
        """The kept work went through: consume again."""
        self.stalled = False
        self.stall_cause = ""
        self.flow.apply(self.consumer, self.degradation.actions, stalled=False)
        log.info("dependency back; consumption resumed")
        self.write_status()

    def stall_dropped(self) -> None:
        """The stalled partitions moved away; the next ``observe`` un-pauses what is left."""
        self.stalled = False
        log.info("stall ended: partitions moved to another consumer")

    # -- status -----------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """What ``k2 status`` shows: level, breakers, stall, deferral and back-fill counts."""
        return {
            "degradation": self.degradation.status(),
            "signals": {
                "lag": self.lag,
                "peak_lag": self.peak_lag,
                "batch_ratio": round(self.meter.ratio(), 3),
                "lags": [{"topic": t, "partition": p, "lag": n} for (t, p), n in sorted(self.lags.items())],
            },
            "rate": {
                "messages_per_s": round(self.read_rate.rate(self.stats.messages), 2),
                "written_per_s": round(self.write_rate.rate(self.stats.written), 2),
            },
            "commit": commit_facts(
                self.checkpoint.commits, self.checkpoint.last_commit_s, self.checkpoint.last_commit_at
            ),
            "quality": quality_facts(self.stats.dead_letters, self.stats.latest_dead_letters),
            "breakers": [dataclasses.asdict(b) for b in self.breakers.status()],
            "stalled": self.stalled,
            "stall_cause": self.stall_cause,
            "tiers": self.tiers.counts(),
            "deferred": sum(self.spill.deferred.values()),
            "spilled": sum(self.spill.durable.values()),
            "backfilled": self.stats.backfilled,
            "stats": {
                "messages": self.stats.messages,
                "written": self.stats.written,
                "duplicates": self.stats.duplicates,
                "dead_letters": self.stats.dead_letters,
                "commits": self.checkpoint.commits,
                "stalls": self.stats.stalls,
            },
        }

    def write_status(self, *, stopped: bool = False) -> None:
        try:
            self.status_file.write({**self.status(), "running": not stopped})
        except OSError as exc:  # a status display must never stop the ingest
            log.warning("status file not written", path=str(self.status_file.path), error=str(exc))
