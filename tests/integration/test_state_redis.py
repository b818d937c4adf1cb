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
from k2.state.errors import StaleStateError
from k2.state.model import KeyState
from k2.state.synthetic import SyntheticFeed
from tests.unit.state.contract import DedupStoreContract, SequenceStoreContract


def _with_backend(settings: Settings, backend: str) -> Settings:
    return load_settings(**{**settings.model_dump(), "state": {"backend": backend}})


class TestSequenceStores(SequenceStoreContract):
    @pytest.fixture(params=["embedded", "lua", "watch", "lua-cached", "watch-cached"])
    def open_store(self, request: pytest.FixtureRequest, settings: Settings) -> Callable[[], SequenceStore]:
        if request.param == "embedded":
            s = _with_backend(settings, "embedded")
            return lambda: open_sequence_store(s.state, s.redis, s.data_dir)
        s = _with_backend(settings, "redis")
        mode, _, cached = request.param.partition("-")
        return lambda: open_sequence_store(
            s.state,
            s.redis,
            s.data_dir,
            commit_mode=mode,
            preload=bool(cached),  # type: ignore[arg-type]
        )


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
    assert len(keys) == 22  # 20 symbols + 1 partition token + the last commit's id
    assert f"{settings.redis.key_prefix}seq:last" in keys
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


# --- the Redis store's cache (the pipeline's: ``preload=True``) -------------------------------------

A, B = ("trades", "ASX", "BHP"), ("trades", "ASX", "CBA")


def _cached(settings: Settings, mode: str = "watch", keys: int = 1_000) -> RedisSequenceStore:
    return RedisSequenceStore(settings.redis, commit_mode=mode, cache_keys=keys)  # type: ignore[arg-type]


def _raw(settings: Settings):  # type: ignore[no-untyped-def]
    import redis

    return redis.Redis.from_url(settings.redis.effective_url)


@pytest.mark.parametrize("mode", ["watch", "lua"])
def test_cached_store_serves_what_it_wrote_without_reading_redis(settings: Settings, mode: str) -> None:
    """The cache is used: a key changed behind K2's back (no commit, so no counter move) is not seen.
    That is the trust model: every writer of the namespace commits through a store."""
    from k2.state.model import encode_state

    with _cached(settings, mode) as store:
        store.commit({A: KeyState(19_800, 5)}, [PartitionToken("k2.trades", 0, None, 10)])
        _raw(settings).set(store._key(A), encode_state(KeyState(19_800, 99)))
        assert store.load([A]) == {A: KeyState(19_800, 5)}
    with RedisSequenceStore(settings.redis) as plain:
        assert plain.load([A]) == {A: KeyState(19_800, 99)}


@pytest.mark.parametrize("mode", ["watch", "lua"])
def test_another_writers_commit_drops_the_cache(settings: Settings, mode: str) -> None:
    with _cached(settings, mode) as old, _cached(settings, mode) as new:
        old.commit(
            {A: KeyState(19_800, 5), B: KeyState(19_800, 1)}, [PartitionToken("k2.trades", 0, None, 10)]
        )
        assert old.load([A, B]) == {A: KeyState(19_800, 5), B: KeyState(19_800, 1)}
        # a second ingester takes partition 0 and writes A (and only A)
        new.commit({A: KeyState(19_800, 9)}, [PartitionToken("k2.trades", 0, 10, 14)])
        assert old.load([A, B]) == {A: KeyState(19_800, 9), B: KeyState(19_800, 1)}
        # and the old owner's next commit is fenced, leaving nothing cached it cannot vouch for
        with pytest.raises(StaleStateError):
            old.commit({B: KeyState(19_800, 2)}, [PartitionToken("k2.trades", 0, 10, 11)])
        assert old._cache == {} and old._last is None
        assert old.load([A, B]) == {A: KeyState(19_800, 9), B: KeyState(19_800, 1)}


def test_a_commit_racing_another_writer_restarts_the_cache(settings: Settings) -> None:
    """Two writers on different partitions: a commit whose predecessor is the other's does not keep
    what its cache held before."""
    with _cached(settings) as one, _cached(settings) as two:
        one.commit({A: KeyState(19_800, 5)}, [PartitionToken("k2.trades", 0, None, 10)])
        two.commit({B: KeyState(19_800, 1)}, [PartitionToken("k2.trades", 1, None, 3)])
        one.commit({("trades", "ASX", "NAB"): KeyState(19_800, 2)}, [PartitionToken("k2.trades", 0, 10, 12)])
        assert A not in one._cache  # written before two's commit: not vouched for any more
        assert one.load([A, B]) == {A: KeyState(19_800, 5), B: KeyState(19_800, 1)}


def test_redis_restarted_from_an_older_snapshot_is_noticed(settings: Settings) -> None:
    """A Redis that lost its last writes (restarted from an older snapshot) brings back an older
    commit's id with the states: the cache must not outlive them, even once other commits follow."""
    from k2.state.model import encode_state

    raw = _raw(settings)
    last = f"{settings.redis.key_prefix}seq:last"
    with _cached(settings) as store, _cached(settings) as other:
        store.commit({A: KeyState(19_800, 5)}, [PartitionToken("k2.trades", 0, None, 10)])
        snapshot = raw.get(last)
        store.commit({A: KeyState(19_800, 8)}, [PartitionToken("k2.trades", 0, 10, 12)])
        # the restart: the state, token and last id as they were after the first commit
        raw.mset({store._key(A): encode_state(KeyState(19_800, 5)),
                  store._token_key("k2.trades", 0): 10, last: snapshot})  # fmt: skip
        assert store.load([A]) == {A: KeyState(19_800, 5)}
        # the same restart, then another writer's commit before this store looks again
        store.commit({A: KeyState(19_800, 8)}, [PartitionToken("k2.trades", 0, 10, 12)])
        raw.mset({store._key(A): encode_state(KeyState(19_800, 5)),
                  store._token_key("k2.trades", 0): 10, last: snapshot})  # fmt: skip
        other.commit({B: KeyState(19_800, 1)}, [PartitionToken("k2.trades", 1, None, 4)])
        assert store.load([A, B]) == {A: KeyState(19_800, 5), B: KeyState(19_800, 1)}
        raw.delete(*raw.keys(f"{settings.redis.key_prefix}*"))  # a Redis that lost everything
        assert store.load([A, B]) == {}


def test_cache_beyond_its_bound_starts_again_and_stays_exact(settings: Settings) -> None:
    keys = [("trades", "ASX", f"S{i}") for i in range(10)]
    with _cached(settings, keys=4) as store:
        for i, k in enumerate(keys):
            store.commit({k: KeyState(19_800, i + 1)}, [PartitionToken("k2.trades", 0, i or None, i + 1)])
            assert len(store._cache) <= 4
        assert store.load(keys) == {k: KeyState(19_800, i + 1) for i, k in enumerate(keys)}
        assert len(store._cache) <= 4


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_cached_stores_agree_with_a_reference_under_interleaved_writers(
    settings: Settings, seed: int
) -> None:
    """Two cached stores (two ingesters taking turns with one partition) and one uncached reader:
    every load equals a dict of what was committed, whoever committed it."""
    import random

    rng = random.Random(seed)
    keys = [("trades", "ASX", f"S{i}") for i in range(30)]
    truth: dict[tuple[str, str, str], KeyState] = {}
    token: int | None = None
    stores = [_cached(settings, rng.choice(["watch", "lua"]), keys=rng.choice([5, 1_000])) for _ in range(2)]
    reader = RedisSequenceStore(settings.redis)
    try:
        for step in range(300):
            store = rng.choice(stores)
            if rng.random() < 0.5:
                batch = {
                    k: KeyState(19_800, step * 100 + i)
                    for i, k in enumerate(rng.sample(keys, rng.randint(1, 8)))
                }
                nxt = (token or 0) + rng.randint(1, 5)
                store.commit(batch, [PartitionToken("k2.trades", 0, token, nxt)])
                truth.update(batch)
                token = nxt
            else:
                asked = rng.sample(keys, rng.randint(1, 12))
                want = {k: truth[k] for k in asked if k in truth}
                assert store.load(asked) == want, f"step {step}"
                assert reader.load(asked) == want
    finally:
        for s in (*stores, reader):
            s.close()


def test_loads_racing_own_commits_on_another_thread_stay_exact(settings: Settings) -> None:
    """The pipeline's shape: one thread commits checkpoints, another loads keys the commit in flight
    does not hold (those are read from the checkpoint's own layer); every load is exact."""
    import threading

    keys = [("trades", "ASX", f"S{i}") for i in range(200)]
    written = {k: KeyState(19_800, 1) for k in keys[:100]}
    errors: list[str] = []
    with _cached(settings) as store:
        store.commit(written, [PartitionToken("k2.trades", 0, None, 1)])
        stop = threading.Event()

        def committer() -> None:
            token = 1
            for n in range(2, 80):  # rewrites keys 100..199 only
                store.commit(
                    {k: KeyState(19_800, n) for k in keys[100:]}, [PartitionToken("k2.trades", 0, token, n)]
                )
                token = n
            stop.set()

        t = threading.Thread(target=committer)
        t.start()
        while not stop.is_set():
            got = store.load(keys[:100])
            if got != written:
                errors.append(f"{len(got)} keys, {sum(got.get(k) != v for k, v in written.items())} wrong")
        t.join()
        assert store.load(keys[100:]) == {k: KeyState(19_800, 79) for k in keys[100:]}
    assert not errors, errors[:3]
