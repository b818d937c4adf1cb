"""State stores against a real Redis (started by K2's launcher) and the embedded backend, one contract.

The same behaviour tests run for the SQLite store, for Redis with the Lua commit and for Redis with
WATCH/MULTI/EXEC, and the backends are picked through the same factories the pipeline uses.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from k2.config import Settings, load_settings
from k2.state import (
    Deduplicator,
    EmbeddedSequenceStore,
    PartitionToken,
    RedisDedupStore,
    RedisSequenceStore,
    SequenceStore,
    SequenceTracker,
    batch_tokens,
    open_dedup_store,
    open_sequence_store,
)
from k2.state.base import DedupStore
from k2.state.synthetic import SyntheticFeed
from tests.unit.state.contract import DedupStoreContract, SequenceStoreContract


def _with_backend(settings: Settings, backend: str) -> Settings:
    return load_settings(**{**settings.model_dump(), "state": {"backend": backend}})


class TestSequenceStores(SequenceStoreContract):
    @pytest.fixture(params=["embedded", "lua", "watch"])
    def open_store(self, request: pytest.FixtureRequest, settings: Settings) -> Callable[[], SequenceStore]:
        if request.param == "embedded":
            s = _with_backend(settings, "embedded")
            return lambda: open_sequence_store(s.state, s.redis, s.data_dir)
        s = _with_backend(settings, "redis")
        return lambda: open_sequence_store(s.state, s.redis, s.data_dir, commit_mode=request.param)


class TestDedupStores(DedupStoreContract):
    @pytest.fixture(params=["embedded", "redis"])
    def open_store(self, request: pytest.FixtureRequest, settings: Settings) -> Callable[[], DedupStore]:
        s = _with_backend(settings, request.param)
        return lambda: open_dedup_store(s.state, s.redis, s.data_dir, namespace="trades")


def test_factories_pick_the_configured_backend(settings: Settings) -> None:
    redis = _with_backend(settings, "redis")
    embedded = _with_backend(settings, "embedded")
    with open_sequence_store(redis.state, redis.redis, redis.data_dir) as store:
        assert isinstance(store, RedisSequenceStore) and store.commit_mode == "watch"
    with open_sequence_store(embedded.state, embedded.redis, embedded.data_dir) as store:
        assert isinstance(store, EmbeddedSequenceStore)
        assert (embedded.data_dir / "state" / "sequence.sqlite").is_file()
    with open_dedup_store(redis.state, redis.redis, redis.data_dir, namespace="quotes") as dd:
        assert isinstance(dd, RedisDedupStore) and dd.ttl_s == 24 * 3600 + 6 * 3600


def test_redis_keys_carry_the_configured_prefix(settings: Settings) -> None:
    import redis

    store = RedisSequenceStore(settings.redis)
    tracker = SequenceTracker("trades")
    batch = SyntheticFeed(symbols=20, seed=1).next_batch(200)
    result = tracker.classify(batch, store.load(tracker.keys(batch)))
    store.commit(result.states, batch_tokens("k2.trades", batch, {}))
    client = redis.Redis.from_url(settings.redis.effective_url)
    keys = {k.decode() for k in client.scan_iter(match=f"{settings.redis.key_prefix}*")}
    assert len(keys) == 21  # 20 symbols + 1 partition token
    assert f"{settings.redis.key_prefix}seq:tok:k2.trades:0" in keys
    assert store.load(tracker.keys(batch)) == result.states


def test_deduplicator_on_redis_rebuilds_its_filter_from_the_exact_store(
    settings: Settings, tmp_path: Path
) -> None:
    s = _with_backend(settings, "redis")
    t = datetime(2024, 3, 4, 10, tzinfo=UTC)
    batch = SyntheticFeed(symbols=50, seed=2).next_batch(2000)
    ids = batch["message_id"].unique(maintain_order=True)
    store = open_dedup_store(s.state, s.redis, s.data_dir, namespace="trades")
    first = Deduplicator.from_settings("trades", s.state, store)
    assert not first.check(ids, t).any()
    first.commit(ids, t, [PartitionToken("k2.trades", 0, None, 2000)])
    path = tmp_path / "trades.bloom"
    first.save(path)
    restarted = Deduplicator.from_settings(
        "trades", s.state, open_dedup_store(s.state, s.redis, s.data_dir, namespace="trades")
    )
    assert restarted.load(path) is True
    assert restarted.check(ids, t).all()
    path.unlink()
    rebuilt = Deduplicator.from_settings(
        "trades", s.state, open_dedup_store(s.state, s.redis, s.data_dir, namespace="trades")
    )
    assert rebuilt.load(path) is False
    mixed = pl.concat([ids.head(10), pl.Series("message_id", ["f" * 32])])
    assert rebuilt.check(mixed, t).to_list() == [True] * 10 + [False]


@pytest.mark.parametrize("backend", ["embedded", "redis"])
def test_ids_in_upper_case_hex_are_found_again_after_their_commit(settings: Settings, backend: str) -> None:
    """The embedded store keys on the ids' bytes; Redis keeps their text as the feed spelled it.
    Either way a batch committed in upper-case hex is a duplicate when it comes again."""
    s = _with_backend(settings, backend)
    t = datetime(2024, 3, 4, 10, tzinfo=UTC)
    ids = pl.Series("message_id", [(f"{i * 7919 + 12345:032x}").upper() for i in range(5)] + ["ab" * 16])
    store = open_dedup_store(s.state, s.redis, s.data_dir, namespace="trades")
    dedup = Deduplicator.from_settings("trades", s.state, store)
    assert store.takes_keys is (backend == "embedded")
    assert not dedup.check(ids, t).any()
    dedup.commit(ids, t, [PartitionToken("k2.trades", 0, None, 6)])
    assert dedup.check(ids, t).all()
    assert store.contains(ids, store.generations()) == [True] * 6  # the exact tier alone
