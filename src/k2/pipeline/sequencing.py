"""The pipeline's default checks: sequence tracking and dedup from ``k2.state``, built from Settings."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import polars as pl

from k2.config import RedisSettings, Settings
from k2.lake.tables import TICK_TABLES
from k2.observability.logging import get_logger
from k2.pipeline.checks import BatchChecks, CheckResult
from k2.state import Deduplicator, open_dedup_store, open_sequence_store, state_dir
from k2.state.checks import DedupOpener, StateChecks
from k2.state.factory import namespace_state
from k2.types import Offsets, TopicPartition

__all__ = ["SequenceChecks"]

log = get_logger(__name__)


class SequenceChecks(BatchChecks):
    """``StateChecks`` on the configured backend, with one Deduplicator per owned partition."""

    def __init__(self, settings: Settings) -> None:
        state = settings.state
        redis, data_dir = namespace_state(settings)
        store = open_sequence_store(state, redis, data_dir, commit_mode=state.redis_commit)
        openers: dict[str, DedupOpener] = {}
        if state.dedup:
            for kind in TICK_TABLES:
                topic = settings.kafka.topic(kind)
                openers[topic] = _opener(kind, topic, settings, redis, data_dir)
        self._inner = StateChecks(
            store,
            reorder_window=state.reorder_window,
            sessions_kept=state.sessions_kept,
            reorder_timeout=state.reorder_timeout,
            dedup=openers,
        )

    def assign(self, partitions: list[TopicPartition]) -> Offsets:
        return self._inner.assign(partitions)

    def process(self, kind: str, topic: str, frame: pl.DataFrame) -> CheckResult:
        return self._inner.process(kind, topic, frame)

    def prepare(self, end: Offsets) -> Callable[[], None]:
        return self._inner.prepare(end)

    def revoke(self, partitions: list[TopicPartition]) -> None:
        self._inner.revoke(partitions)

    def expire(self) -> dict[str, pl.DataFrame]:
        return self._inner.expire()

    def close(self) -> None:
        """Save the owned partitions' Bloom filters (after the final commit): no rebuild next start."""
        self._inner.close()


def _opener(kind: str, topic: str, settings: Settings, redis: RedisSettings, data_dir: Path) -> DedupOpener:
    """Opens one partition's exact-store namespace and filter: saved file if current, else rebuilt."""
    state = settings.state
    base = re.sub(r"[^A-Za-z0-9_]", "_", topic)

    def open_partition(partition: int) -> Deduplicator:
        exact = open_dedup_store(state, redis, data_dir, namespace=f"{base}_p{partition}")
        path = state_dir(data_dir) / f"bloom-{topic}-{partition}.bin"
        dedup = Deduplicator.from_settings(
            kind, state, exact, share=settings.kafka.partitions, bloom_file=path
        )
        used = dedup.load(path)
        log.info(
            "bloom filter ready", topic=topic, partition=partition, source="file" if used else "exact store"
        )
        return dedup

    return open_partition
