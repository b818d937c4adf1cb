"""The pipeline's default checks: sequence tracking and dedup from ``k2.state``, built from Settings."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import polars as pl

from k2.config import Settings
from k2.lake.tables import TICK_TABLES
from k2.observability.logging import get_logger
from k2.pipeline.checks import BatchChecks, CheckResult
from k2.state import Deduplicator, open_dedup_store, open_sequence_store, state_dir
from k2.state.checks import StateChecks
from k2.types import Offsets, TopicPartition

__all__ = ["SequenceChecks"]

log = get_logger(__name__)


class SequenceChecks(BatchChecks):
    """``StateChecks`` on the configured backend, with each kind's Bloom filter saved on close."""

    def __init__(self, settings: Settings) -> None:
        state = settings.state
        # State belongs to one lake namespace, like the tables whose offsets it must agree with: a
        # second namespace fed the same ticks (a demo, a backfill into a scratch namespace) starts
        # from nothing instead of calling every tick a duplicate.
        ns = settings.lake.namespace
        redis = settings.redis.model_copy(update={"key_prefix": f"{settings.redis.key_prefix}{ns}:"})
        data_dir = settings.data_dir / "state" / ns
        store = open_sequence_store(state, redis, data_dir, commit_mode=state.redis_commit)
        self._dedup: dict[str, Deduplicator] = {}
        self._bloom_files: dict[str, Path] = {}
        if state.dedup:
            for kind in TICK_TABLES:
                topic = settings.kafka.topic(kind)
                namespace = re.sub(r"[^A-Za-z0-9_]", "_", topic)  # one exact set per topic
                exact = open_dedup_store(state, redis, data_dir, namespace=namespace)
                dedup = Deduplicator.from_settings(kind, state, exact)
                path = state_dir(data_dir) / f"bloom-{topic}.bin"
                used = dedup.load(path)  # the saved filter if it matches the store, else rebuilt from it
                log.info("bloom filter ready", topic=topic, source="file" if used else "exact store")
                self._dedup[topic] = dedup
                self._bloom_files[topic] = path
        self._inner = StateChecks(
            store,
            reorder_window=state.reorder_window,
            sessions_kept=state.sessions_kept,
            dedup=self._dedup,
        )

    def assign(self, partitions: list[TopicPartition]) -> Offsets:
        return self._inner.assign(partitions)

    def process(self, kind: str, topic: str, frame: pl.DataFrame) -> CheckResult:
        return self._inner.process(kind, topic, frame)

    def prepare(self, end: Offsets) -> Callable[[], None]:
        return self._inner.prepare(end)

    def revoke(self, partitions: list[TopicPartition]) -> None:
        self._inner.revoke(partitions)

    def close(self) -> None:
        """Save the Bloom filters (after the final commit) so the next start needs no rebuild."""
        for topic, dedup in self._dedup.items():
            dedup.save(self._bloom_files[topic])
        self._inner.store.close()
