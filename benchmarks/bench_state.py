"""Sequence state and dedup throughput, per backend, against plain Python in the same run.

    python -m benchmarks.bench_state [--quick] [--batches N] [--batch-size N] [--symbols N]

1. Sequence classification, load + classify + commit per 10,000-tick batch over 1,000 symbols
   (mostly in order; ~0.05 % drops, duplicates and swaps), for: a plain Python dict/set classifier
   (in memory, no store: the baseline), K2's tracker in memory, the embedded SQLite store, and Redis
   with the Lua commit and with WATCH/MULTI/EXEC.
2. Dedup: the windowed Bloom filter's add/contains rate and bytes per key (10 M capacity, 0.1 %),
   against a Python set, and Deduplicator check + commit per batch on each exact store.

Redis is started through K2's launcher on a free port in a temporary data directory, and stopped.
Per-batch figures are medians (p99 beside them); rates are ticks per second.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import polars as pl

from benchmarks.results import write_result
from benchmarks.services import redis_server
from k2.config import RedisSettings, Settings, load_settings
from k2.services.process import free_port as _free_port
from k2.state.base import PartitionToken, SequenceStore, batch_tokens
from k2.state.bloom import WindowedBloom
from k2.state.dedup import Deduplicator
from k2.state.embedded import EmbeddedDedupStore, EmbeddedSequenceStore
from k2.state.ids import id_bytes
from k2.state.redis import RedisDedupStore, RedisSequenceStore
from k2.state.synthetic import SyntheticFeed
from k2.state.tracker import SequenceTracker

__all__ = ["main"]

TOPIC = "k2.trades"


@contextmanager
def _redis(data_dir: Path) -> Iterator[Settings]:
    settings = load_settings(data_dir=data_dir, redis={"port": _free_port(), "key_prefix": "bench:"})
    with redis_server(settings, timeout_s=30):
        yield settings


def _stats(times: list[float], ticks: int) -> str:
    med = statistics.median(times)
    p99 = float(np.percentile(times, 99))
    return f"{med * 1e3:7.2f} ms  p99 {p99 * 1e3:7.2f} ms  {ticks / med:>12,.0f}/s"


def python_classifier() -> Callable[[pl.DataFrame], list[int]]:
    """The baseline: one Python step per tick with a dict of (session, hwm, missing set) per key."""
    state: dict[tuple[str, str], list] = {}

    def classify(batch: pl.DataFrame) -> list[int]:
        out = []
        cols = [batch[c].to_list() for c in ("exchange", "symbol", "session", "sequence")]
        for ex, sym, session, seq in zip(*cols, strict=True):
            st = state.get((ex, sym))
            if st is None or st[0] != session:
                st = state[(ex, sym)] = [session, 0, set()]
            hwm = st[1]
            if seq == hwm + 1:
                st[1] = seq
                out.append(0)
            elif seq > hwm:
                st[2].update(range(hwm + 1, seq))
                st[1] = seq
                out.append(1)
            elif seq in st[2]:
                st[2].discard(seq)
                out.append(3)
            else:
                out.append(2)
        return out

    return classify


class _Runner:
    """One variant's state across batches: load + classify + commit, timed by phase."""

    def __init__(self, store: SequenceStore | None) -> None:
        self.store = store
        self.tracker = SequenceTracker("trades")
        self.states: dict = {}
        self.expected: int | None = None
        self.phases: dict[str, list[float]] = {"load": [], "classify": [], "commit": [], "total": []}

    def step(self, batch: pl.DataFrame) -> None:
        store, tracker = self.store, self.tracker
        t0 = time.perf_counter()
        keys = tracker.keys(batch)
        loaded = store.load(keys) if store else {k: self.states[k] for k in keys if k in self.states}
        t1 = time.perf_counter()
        result = tracker.classify(batch, loaded)
        t2 = time.perf_counter()
        tokens = batch_tokens(TOPIC, batch, {0: self.expected})
        if store:
            store.commit(result.states, tokens)
        else:
            self.states.update(result.states)
        self.expected = tokens[0].offset
        t3 = time.perf_counter()
        for k, v in zip(self.phases, (t1 - t0, t2 - t1, t3 - t2, t3 - t0), strict=True):
            self.phases[k].append(v)


def bench_sequence(batches: list[pl.DataFrame], stores: dict[str, SequenceStore | None]) -> dict[str, float]:
    """Every variant handles batch i before any handles batch i + 1, so machine noise hits all alike."""
    n = batches[0].height
    warm = max(2, len(batches) // 10)
    print(f"\n== sequence: load + classify + commit, {len(batches)} batches of {n:,} ticks ==")
    baseline = python_classifier()
    base_times: list[float] = []
    runners = {name: _Runner(store) for name, store in stores.items()}
    for b in batches:
        t = time.perf_counter()
        baseline(b)
        base_times.append(time.perf_counter() - t)
        for runner in runners.values():
            runner.step(b)
    base = statistics.median(base_times[warm:])
    print(f"{'python dict/set (baseline)':28s} {_stats(base_times[warm:], n)}  x1.00")
    rates = {"python dict/set": n / base}
    for name, runner in runners.items():
        total = runner.phases["total"][warm:]
        rates[name] = n / statistics.median(total)
        ratio = base / statistics.median(total)
        parts = "  ".join(
            f"{k} {statistics.median(v[warm:]) * 1e3:.2f}" for k, v in runner.phases.items() if k != "total"
        )
        print(f"{name:28s} {_stats(total, n)}  x{ratio:.2f}   ({parts} ms)")
    return rates


def bench_bloom(n: int) -> dict[str, float]:
    print(f"\n== bloom: {n:,} ids; one generation filled to its capacity, 0.1 % ==")
    raw = np.random.default_rng(1).bytes(32 * n).hex()
    members = [raw[i : i + 32] for i in range(0, 32 * n, 32)]
    probes = [raw[i : i + 32] for i in range(32 * n, 64 * n, 32)]
    member_ids, probe_ids = pl.Series(members), pl.Series(probes)
    bloom = WindowedBloom(capacity=4 * n, error_rate=0.001, generations=4)
    bloom.rotate(0)
    rates = {}
    t = time.perf_counter()
    bloom.add(0, id_bytes(member_ids))
    rates["add (id_bytes + insert)"] = n / (time.perf_counter() - t)
    t = time.perf_counter()
    hits = bloom.contains(id_bytes(member_ids))
    rates["contains, members"] = n / (time.perf_counter() - t)
    t = time.perf_counter()
    fp = bloom.contains(id_bytes(probe_ids)).mean()
    rates["contains, non-members"] = n / (time.perf_counter() - t)
    for g in range(1, 4):  # every generation full: a lookup tests all four
        bloom.rotate(g)
        bloom.add(g, np.frombuffer(np.random.default_rng(10 + g).bytes(16 * n), dtype="S16"))
    t = time.perf_counter()
    fp4 = bloom.contains(id_bytes(probe_ids)).mean()
    rates["contains, 4 full generations"] = n / (time.perf_counter() - t)
    seen: set[str] = set()
    t = time.perf_counter()
    seen.update(members)
    set_add = n / (time.perf_counter() - t)
    t = time.perf_counter()
    _ = [p in seen for p in probes]
    set_has = n / (time.perf_counter() - t)
    for k, v in rates.items():
        print(f"{k:28s} {v:>12,.0f}/s")
    print(
        f"{'python set add / contains':28s} {set_add:>12,.0f}/s / {set_has:,.0f}/s (baseline, ~100 B per id)"
    )
    assert hits.all(), "a Bloom filter has no false negatives"
    full = WindowedBloom(capacity=10_000_000, error_rate=0.001, generations=4).full_nbytes()
    print(
        f"bytes per key, 10 M capacity: {full / 10_000_000:.3f} ({full / 2**20:.1f} MiB; formula 1.797, target <= 2)"
    )
    print(
        f"false-positive rate of one full generation: {fp:.5f} (p = 0.001); of 4: {fp4:.5f} (formula 0.00400)"
    )
    return {
        "bloom_add_per_s": rates["add (id_bytes + insert)"],
        "bloom_contains_per_s": rates["contains, non-members"],
        "bloom_bytes_per_key": full / 10_000_000,
        "bloom_fp_one_generation": float(fp),
        "bloom_fp_four_generations": float(fp4),
    }


def bench_dedup(
    batches: list[pl.DataFrame], stores: dict[str, Callable[[], object]], per_commit: int
) -> dict[str, float]:
    n = batches[0].height
    print(
        f"\n== dedup: check per batch of {n:,}, commit every {per_commit} batches (a pipeline checkpoint) =="
    )
    rates: dict[str, float] = {}
    for name, make in stores.items():
        d = Deduplicator("trades", make(), capacity=10_000_000)  # type: ignore[arg-type]
        checks, commits = [], []
        offset: int | None = None
        pending: list[pl.DataFrame] = []
        for i, b in enumerate(batches, 1):
            t = time.perf_counter()
            dup = d.check(b["message_id"], b["exchange_ts"])
            pending.append(b.filter(~dup))
            checks.append(time.perf_counter() - t)
            if i % per_commit == 0:
                kept = pl.concat(pending)
                pending.clear()
                t = time.perf_counter()
                end = (offset or 0) + n * per_commit
                d.commit(kept["message_id"], kept["exchange_ts"], [PartitionToken(TOPIC, 0, offset, end)])
                offset = end
                commits.append(time.perf_counter() - t)
        per_batch = statistics.median(checks) + statistics.median(commits) / per_commit
        # the embedded store merges runs now and then: the mean shows what those merges cost
        amortised = statistics.mean(checks) + statistics.mean(commits) / per_commit
        rates[name] = n / per_batch
        print(
            f"{name:28s} check {statistics.median(checks) * 1e3:6.2f} ms, "
            f"commit {statistics.median(commits) * 1e3:7.2f} ms per {n * per_commit:,}: {n / per_batch:>10,.0f}/s"
            f"  (means: commit {statistics.mean(commits) * 1e3:7.2f} ms, {n / amortised:>10,.0f}/s)"
        )
    return rates


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (about 20 s)")
    parser.add_argument("--batches", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--symbols", type=int, default=1_000)
    args = parser.parse_args(argv)
    count = args.batches or (25 if args.quick else 120)
    feed = SyntheticFeed(symbols=args.symbols, fault_rate=0.0005, seed=11)
    batches = [feed.next_batch(args.batch_size) for _ in range(count)]
    with tempfile.TemporaryDirectory(prefix="k2-bench-state-") as tmp, _redis(Path(tmp) / "k2") as settings:
        redis: RedisSettings = settings.redis
        seq_stores: dict[str, SequenceStore | None] = {
            "k2 tracker, in memory": None,
            "embedded (SQLite)": EmbeddedSequenceStore(Path(tmp) / "embedded"),
            "embedded, no cache": EmbeddedSequenceStore(Path(tmp) / "embedded-nocache", cache=False),
            "redis, Lua commit": RedisSequenceStore(redis.model_copy(update={"key_prefix": "bench:lua:"})),
            "redis, WATCH/MULTI/EXEC": RedisSequenceStore(
                redis.model_copy(update={"key_prefix": "bench:watch:"}), commit_mode="watch"
            ),
        }
        seq = bench_sequence(batches, seq_stores)
        bloom = bench_bloom(200_000 if args.quick else 1_000_000)
        dedup = bench_dedup(
            batches[: max(10, count // 2)],
            {
                "dedup, embedded": lambda: EmbeddedDedupStore(Path(tmp) / "dedup", "trades"),
                "dedup, redis": lambda: RedisDedupStore(redis, "trades", ttl_s=3600),
            },
            per_commit=5,
        )
        for store in seq_stores.values():
            if store:
                store.close()
    write_result(
        "bench_state",
        {
            "sequence_python_dict_per_s": seq["python dict/set"],
            "sequence_embedded_per_s": seq["embedded (SQLite)"],
            "sequence_redis_lua_per_s": seq["redis, Lua commit"],
            "sequence_redis_watch_per_s": seq["redis, WATCH/MULTI/EXEC"],
            **bloom,
            "dedup_embedded_per_s": dedup["dedup, embedded"],
            "dedup_redis_per_s": dedup["dedup, redis"],
        },
        quick=args.quick,
    )


if __name__ == "__main__":
    main()
