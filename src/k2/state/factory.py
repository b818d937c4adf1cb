"""Pick the state backends from configuration: ``state.backend`` is "embedded" or "redis"."""

from __future__ import annotations

from pathlib import Path

from k2.config import RedisSettings, StateSettings
from k2.state.base import DedupStore, SequenceStore
from k2.state.embedded import EmbeddedDedupStore, EmbeddedSequenceStore
from k2.state.redis import CommitMode, RedisDedupStore, RedisSequenceStore

__all__ = ["open_dedup_store", "open_sequence_store", "state_dir"]


def state_dir(data_dir: Path) -> Path:
    """Where the embedded stores and saved Bloom filters live: ``<data_dir>/state``."""
    return data_dir / "state"


def open_sequence_store(
    settings: StateSettings, redis: RedisSettings, data_dir: Path, *, commit_mode: CommitMode = "watch"
) -> SequenceStore:
    """The configured sequence store.

    Raises:
        StateStoreError: the embedded file cannot be opened (Redis connects lazily, on first use).
    """
    if settings.backend == "redis":
        return RedisSequenceStore(redis, commit_mode=commit_mode)
    return EmbeddedSequenceStore(state_dir(data_dir))


def open_dedup_store(
    settings: StateSettings, redis: RedisSettings, data_dir: Path, *, namespace: str
) -> DedupStore:
    """The configured exact dedup store for one namespace (the stream kind).

    Raises:
        StateStoreError: the embedded file cannot be opened.
    """
    if settings.backend == "redis":
        span_s = settings.dedup_window_hours * 3600 / settings.dedup_generations
        return RedisDedupStore(redis, namespace, ttl_s=int(settings.dedup_window_hours * 3600 + span_s))
    return EmbeddedDedupStore(state_dir(data_dir), namespace)
