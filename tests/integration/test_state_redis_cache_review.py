"""The Redis store's cache, from an outside review of its first version (4d52b3b): the paths by which
a cached load differed from Redis, each a test that fails on that version."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from k2.config import Settings, load_settings
from k2.services import Launcher
from k2.services.process import free_port
from k2.state import PartitionToken, RedisSequenceStore
from k2.state.model import KeyState, encode_state

K = ("trades", "ASX", "BHP")


def _cached(settings: Settings, mode: str = "watch") -> RedisSequenceStore:
    return RedisSequenceStore(settings.redis, commit_mode=mode, cache_keys=1_000)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["watch", "lua"])
def test_a_listing_made_before_any_commit_does_not_outlive_another_writers_commit(
    settings: Settings, mode: str
) -> None:
    """Fresh namespace (no seq:last yet): ingester A's first load lists the (empty) namespace; B
    then commits K on its partition. A adopts B's id as its baseline but keeps the old listing, so K
    is "known absent" (e.g. once A takes B's partition after B died)."""
    with _cached(settings, mode) as a, _cached(settings, mode) as b:
        assert a.load([K]) == {}
        if a._listing is not None:  # 4d52b3b lists here (the fix does not: no id, no version)
            a._listing.join(timeout=30)
        b.commit({K: KeyState(19_800, 5)}, [PartitionToken("k2.trades", 1, None, 3)])
        assert a.load([K]) == {K: KeyState(19_800, 5)}  # this one re-reads (the id moved)
        assert a.load([K]) == {K: KeyState(19_800, 5)}  # fails on 4d52b3b: {}


def test_states_cached_while_seq_last_is_absent_do_not_outlive_a_redis_that_lost_them(
    settings: Settings,
) -> None:
    """Keys written before the upgrade (no seq:last): A caches K under the version "None"; Redis
    then loses everything (or is restored from another snapshot without seq:last): still "None"."""
    raw = redis.Redis.from_url(settings.redis.effective_url)
    with _cached(settings) as a:
        raw.set(a._key(K), encode_state(KeyState(19_800, 5)))  # a pre-upgrade K2 store's write
        assert a.load([K]) == {K: KeyState(19_800, 5)}
        raw.delete(*raw.keys(f"{settings.redis.key_prefix}*"))  # a Redis that lost everything
        assert a.load([K]) == {}  # fails on 4d52b3b: the cached state


def test_a_listing_spanning_a_redis_restart_does_not_miss_keys(tmp_path: Path) -> None:
    """A restart that keeps every key (a clean stop and start with the append-only file, or a
    failover to an in-sync replica): seq:last is unchanged, so the cache is rightly kept, but
    redis-py's default retry re-sends the listing's next SCAN with the old cursor to the new process
    (another hash seed), which skips keys; the listing must not land."""
    settings = load_settings(data_dir=tmp_path / "k2", redis={"port": free_port(), "key_prefix": "r:"})
    launcher = Launcher(settings)
    launcher.up(["redis"], timeout_s=60)
    keys = [("trades", "ASX", f"S{i}") for i in range(20_000)]
    try:
        with RedisSequenceStore(settings.redis) as writer:  # another ingester's partition, written earlier
            for i in range(0, len(keys), 5_000):
                writer.commit({k: KeyState(19_800, 1) for k in keys[i : i + 5_000]},
                              [PartitionToken("k2.trades", 0, i or None, i + 5_000)])  # fmt: skip
        with RedisSequenceStore(settings.redis, cache_keys=100_000) as store:
            real_scan, calls = store._client.scan, [0]

            def scan(*args, **kwargs):  # type: ignore[no-untyped-def]
                calls[0] += 1
                out = real_scan(*args, **kwargs)
                if calls[0] == 1:  # Redis restarts (K2's launcher: clean stop, start) between two pages
                    launcher.down(["redis"])
                    launcher.up(["redis"], timeout_s=60)
                return out

            store._client.scan = scan  # type: ignore[method-assign]
            assert store.load([("trades", "ASX", "NEW")]) == {}  # the baseline: the listing starts
            assert store._listing is not None
            store._listing.join(timeout=60)
            assert calls[0] > 1
            got = store.load(keys)
            assert len(got) == len(keys), f"{len(keys) - len(got)} keys read as absent"
    finally:
        launcher.down(["redis"])


def test_a_commit_returning_between_a_loads_read_and_its_check_does_not_drop_the_cache(
    settings: Settings,
) -> None:
    """Performance, not correctness: the load read at its snapshot's id (so its answer is exact),
    and the store's own commit then moved the id. Nothing is stale, but 4d52b3b drops the cache and
    the listing (the next listing then waits 60 s, doubling)."""
    import threading

    other = ("trades", "ASX", "CBA")
    with _cached(settings) as store:
        store.commit({K: KeyState(19_800, 1)}, [PartitionToken("k2.trades", 0, None, 1)])
        assert store.load([K, other]) == {K: KeyState(19_800, 1)}
        real, fired = store._mget, []

        def mget(names):  # type: ignore[no-untyped-def]
            out = real(names)
            if not fired:  # the checkpoint thread's commit lands and returns right after the MGET
                fired.append(1)
                t = threading.Thread(target=store.commit,
                                     args=({K: KeyState(19_800, 2)}, [PartitionToken("k2.trades", 0, 1, 2)]))  # fmt: skip
                t.start()
                t.join()
            return out

        store._mget = mget  # type: ignore[method-assign]
        assert store.load([other]) == {}
        assert store._cache.get(K) == KeyState(19_800, 2)  # fails on 4d52b3b: the cache was dropped
