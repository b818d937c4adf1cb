"""Pick the state backends from configuration: ``state.backend`` is "embedded" or "redis"."""

from __future__ import annotations

from pathlib import Path

from k2.config import RedisSettings, Settings, StateSettings
from k2.state.base import DedupStore, SequenceStore
from k2.state.embedded import EmbeddedDedupStore, EmbeddedSequenceStore
from k2.state.redis import CommitMode, RedisDedupStore, RedisSequenceStore

__all__ = ["namespace_state", "open_dedup_store", "open_sequence_store", "state_dir"]


def state_dir(data_dir: Path) -> Path:
    """Where the embedded stores and saved Bloom filters live: ``<data_dir>/state``."""
    return data_dir / "state"


def namespace_state(settings: Settings) -> tuple[RedisSettings, Path]:
    """The Redis settings (key prefix) and data directory of the lake namespace's state.

    State belongs to one lake namespace, like the tables whose offsets it must agree with: a second
    namespace fed the same ticks (a demo, a backfill into a scratch namespace) starts from nothing
    instead of calling every tick a duplicate.
    """
    ns = settings.lake.namespace
    redis = settings.redis.model_copy(update={"key_prefix": f"{settings.redis.key_prefix}{ns}:"})
    return redis, settings.data_dir / "state" / ns


def open_sequence_store(
    settings: StateSettings,
    redis: RedisSettings,
    data_dir: Path,
    *,
    commit_mode: CommitMode = "watch",
    preload: bool = False,
) -> SequenceStore:
    """The configured sequence store; ``preload``: the embedded one reads every state on first use
    (the pipeline, which touches most keys; not a reader of a few).

    Raises:
        StateStoreError: the embedded file cannot be opened (Redis connects lazily, on first use).
    """
    if settings.backend == "redis":
        return RedisSequenceStore(redis, commit_mode=commit_mode)
    return EmbeddedSequenceStore(state_dir(data_dir), preload=preload, fold_at=settings.fold_rows)


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
