"""The pipeline's default checks: ``k2.state.StateChecks`` built from Settings."""

from __future__ import annotations

import re
from pathlib import Path

from k2.config import RedisSettings, Settings
from k2.lake.tables import TICK_TABLES
from k2.observability.logging import get_logger
from k2.state import Deduplicator, StateChecks, open_dedup_store, open_sequence_store, state_dir
from k2.state.checks import DedupOpener
from k2.state.factory import namespace_state

__all__ = ["sequence_checks"]

log = get_logger(__name__)


def sequence_checks(settings: Settings) -> StateChecks:
    """``StateChecks`` on the configured backend, with one Deduplicator per owned partition.

    The pipeline's checks are built here, from Settings, because the topic names and the tables'
    kinds are the pipeline's vocabulary; ``k2.state`` knows neither.
    """
    state = settings.state
    redis, data_dir = namespace_state(settings)
    store = open_sequence_store(state, redis, data_dir, commit_mode=state.redis_commit, preload=True)
    openers: dict[str, DedupOpener] = {}
    if state.dedup:
        for kind in TICK_TABLES:
            topic = settings.kafka.topic(kind)
            openers[topic] = _opener(kind, topic, settings, redis, data_dir)
    return StateChecks(
        store,
        reorder_window=state.reorder_window,
        sessions_kept=state.sessions_kept,
        reorder_timeout=state.reorder_timeout,
        dedup=openers,
    )


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
