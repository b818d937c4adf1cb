"""Width: sequence checks over 1 K, 50 K and 1 M symbols with a Zipf liquidity, both backends.

    python -m benchmarks.bench_width [--quick] [--state-only]

Two parts. The second (``width_e2e``, skipped by ``--state-only``) runs real ``k2 ingest`` processes
over ``k2 feed simulate --liquidity zipf`` through Kafka and Iceberg: ticks/s with checks on, and the
state's rebuild after a real SIGKILL between a tick table's commit and the state's. The first,
described next, isolates the state layer.

A feed of ``ticks`` ticks at 100,000 ticks/s of exchange time over N symbols whose activity is
Zipf-distributed (weight ∝ 1/rank^1.1: a few busy symbols, most quiet), 0.1 % of ticks dropped, on
4 partitions, is classified in 50,000-tick batches with the time bound on (load + classify +
commit per batch, as the pipeline does; Kafka and Iceberg are not in the loop), under the
pipeline's own garbage-collector policy (``k2.pipeline.gcpolicy.tuned_gc`` with the default gen-0
threshold, as ``k2 ingest`` runs): with Python's default collector the ~14,000 keys' objects per
batch at 1 M symbols cost ~20 % in collections the pipeline never pays (measured with
``gc.callbacks``; the figures before 2026-12-07 were taken that way). Reported per run:
ticks/s (wall, and per CPU second of this process: steadier on a shared machine, but it leaves out
the Redis server's CPU), stored state per key, the restart cost (a new store object: the first batch's load with a
cold cache), and the gap-detection latency on the exchange clock (p50/p99; after the feed stops,
the wall-clock fallback ages the rest). The Bloom filter's memory depends on the ids per window, not
the symbols: 1.797 B per id at 0.1 % (17.1 MiB for the default 10 M).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl

from benchmarks.bench_state import _redis
from benchmarks.results import write_result
from benchmarks.width_e2e import run_width_e2e
from k2.config.sections import PipelineSettings
from k2.pipeline.gcpolicy import tuned_gc
from k2.state.base import SequenceStore, batch_tokens
from k2.state.embedded import EmbeddedSequenceStore
from k2.state.redis import RedisSequenceStore
from k2.state.tracker import SequenceTracker

__all__ = ["main"]

BATCH, PARTS, TIMEOUT_S = 50_000, 4, 2.0
T0 = 1_704_189_600_000_000  # 2024-01-02 10:00 UTC


def feed(symbols: int, ticks: int, seed: int = 7) -> pl.DataFrame:
    """Zipf-weighted ticks in arrival order, with 0.1 % of sequences dropped."""
    rng = np.random.default_rng(seed)
    weight = (rng.permutation(symbols) + 1.0) ** -1.1
    sym = rng.choice(symbols, size=ticks, p=weight / weight.sum())
    order = np.argsort(sym, kind="stable")
    seq = np.empty(ticks, dtype=np.int64)
    counts = np.bincount(sym, minlength=symbols)
    starts = np.cumsum(counts) - counts
    seq[order] = np.arange(ticks) - np.repeat(starts, counts) + 1
    drop = rng.random(ticks) < 0.001
    names = pl.Series([f"S{i}" for i in range(symbols)])
    part = np.array([zlib.crc32(n.encode()) % PARTS for n in names.to_list()], dtype=np.int32)
    frame = pl.DataFrame(
        {
            "message_id": pl.int_range(ticks, eager=True).cast(pl.String),
            "exchange": pl.repeat("SIM", ticks, eager=True),
            "symbol": names.gather(sym),
            "session": pl.repeat(19_724, ticks, eager=True).cast(pl.Date),
            "sequence": seq,
            "exchange_ts": pl.Series(T0 + np.arange(ticks) * 10, dtype=pl.Int64).cast(
                pl.Datetime("us", "UTC")
            ),
            "_partition": pl.Series(part[sym], dtype=pl.Int32),
        }
    ).filter(~pl.Series(drop))
    return frame.with_columns(pl.int_range(pl.len()).over("_partition").cast(pl.Int64).alias("_offset"))


def run(store: SequenceStore, frame: pl.DataFrame, reopen: Callable[[], SequenceStore]) -> dict[str, float]:
    with tuned_gc(PipelineSettings().gc_gen0_threshold):  # as k2 ingest runs its loop
        return _run(store, frame, reopen)


def _run(store: SequenceStore, frame: pl.DataFrame, reopen: Callable[[], SequenceStore]) -> dict[str, float]:
    tracker = SequenceTracker("trades", reorder_window=64, reorder_timeout=TIMEOUT_S)
    expected: dict[int, int | None] = {}
    latencies: list[float] = []
    busy = cpu = 0.0
    n = 0
    for a in range(0, frame.height, BATCH):
        batch = frame.slice(a, BATCH)
        began, began_cpu = time.perf_counter(), time.process_time()
        clocks = store.load_clocks(tracker.clock_keys(batch))
        states = store.load(tracker.keys(batch, clocks))
        result = tracker.classify(batch, states, clocks)
        tokens = batch_tokens("k2.trades", batch, expected)
        store.commit(result.states, tokens, result.clocks)
        if a:  # the first batch creates most keys: warm-up
            busy += time.perf_counter() - began
            cpu += time.process_time() - began_cpu
            n += batch.height
        expected.update({t.partition: t.offset for t in tokens})
        latencies.extend(result.detection_s)
    clocks = store.load_clocks([("trades", p) for p in range(PARTS)])
    tail = tracker.expire(
        clocks, store.load([("trades", e, s) for c in clocks.values() for e, s, _ in c.holes])
    )
    latencies.extend(tail.detection_s)
    cold = reopen()
    began = time.perf_counter()
    batch = frame.slice(0, BATCH)
    cold.load(tracker.keys(batch, cold.load_clocks(tracker.clock_keys(batch))))
    restart = time.perf_counter() - began
    cold.close()
    lat = np.array(latencies) if latencies else np.zeros(1)
    return {"ticks_s": n / busy, "cpu_ticks_s": n / cpu, "restart_s": restart, "p50": float(np.percentile(lat, 50)),
            "p99": float(np.percentile(lat, 99)), "gaps": len(latencies)}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="half the ticks (about 15 minutes with the e2e part)"
    )
    parser.add_argument("--state-only", action="store_true", help="skip the end-to-end part (Kafka, Iceberg)")
    opts = parser.parse_args(argv)
    quick = opts.quick
    sizes = [(1_000, 300_000), (50_000, 600_000), (1_000_000, 3_000_000)]
    if quick:
        sizes = [(1_000, 150_000), (50_000, 300_000), (1_000_000, 1_500_000)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp, _redis(Path(tmp) / "redis") as settings:
        for symbols, ticks in sizes:
            frame = feed(symbols, ticks)
            keys = frame["symbol"].n_unique()
            d = Path(tmp) / f"emb{symbols}"
            emb = EmbeddedSequenceStore(d, preload=True)  # as the pipeline opens it
            r = run(emb, frame, partial(EmbeddedSequenceStore, d, preload=True))
            emb.close()
            size = sum(f.stat().st_size for f in d.glob("sequence.sqlite*"))
            rows.append(("embedded", symbols, keys, r, size / keys))
            redis = settings.redis.model_copy(update={"key_prefix": f"w{symbols}:"})
            rs = RedisSequenceStore(redis)
            r = run(rs, frame, partial(RedisSequenceStore, redis))
            sample = frame["symbol"].unique().head(500).to_list()
            mem = [rs._client.memory_usage(rs._key(("trades", "SIM", s))) or 0 for s in sample]
            rs._client.flushdb()
            rs.close()
            rows.append(("redis", symbols, keys, r, float(np.mean(mem))))
            print(f"  {symbols:>9,} symbols done", flush=True)
    base = {b: r["ticks_s"] for b, s, _, r, _ in rows if s == sizes[0][0]}
    cpu_base = {b: r["cpu_ticks_s"] for b, s, _, r, _ in rows if s == sizes[0][0]}
    print(f"\n{'backend':9} {'symbols':>9} {'keys seen':>9} {'ticks/s':>10} {'vs 1K':>6} {'cpu t/s':>10} {'vs 1K':>6} {'B/key':>6} "
          f"{'restart':>8} {'gaps':>5} {'p50 s':>6} {'p99 s':>6}")  # fmt: skip
    for backend, symbols, keys, r, per_key in rows:
        print(f"{backend:9} {symbols:>9,} {keys:>9,} {r['ticks_s']:>10,.0f} {r['ticks_s'] / base[backend]:>6.2f} "
              f"{r['cpu_ticks_s']:>10,.0f} {r['cpu_ticks_s'] / cpu_base[backend]:>6.2f} "
              f"{per_key:>6.0f} {r['restart_s'] * 1e3:>6.0f}ms {r['gaps']:>5} {r['p50']:>6.3f} {r['p99']:>6.3f}")  # fmt: skip
    print("Bloom: 1.797 B per id in the window at 0.1 % (17.1 MiB for 10 M ids), whatever the symbol count")
    figures: dict[str, float] = {}
    for backend, symbols, keys, r, per_key in rows:
        tag = f"{backend}_{symbols}"
        figures |= {
            f"{tag}_keys_seen": keys, f"{tag}_ticks_per_s": r["ticks_s"], f"{tag}_vs_1k": r["ticks_s"] / base[backend],
            f"{tag}_cpu_ticks_per_s": r["cpu_ticks_s"], f"{tag}_cpu_vs_1k": r["cpu_ticks_s"] / cpu_base[backend],
            f"{tag}_state_bytes_per_key": per_key, f"{tag}_cold_first_load_s": r["restart_s"],
            f"{tag}_gaps": r["gaps"], f"{tag}_detection_p50_s": r["p50"], f"{tag}_detection_p99_s": r["p99"],
        }  # fmt: skip
    notes = "state only: load + classify + commit, time bound on, the pipeline's GC policy"
    if not opts.state_only:
        e2e_sizes = [(1_000, 1_000_000), (50_000, 1_000_000), (1_000_000, 2_000_000)]
        if quick:
            e2e_sizes = [(1_000, 300_000), (50_000, 300_000), (1_000_000, 600_000)]
        print("\nend to end: k2 ingest through Kafka and Iceberg, checks on, resilience off")
        with tempfile.TemporaryDirectory(prefix="k2-width-") as tmp:
            e2e = run_width_e2e(e2e_sizes, Path(tmp))
        first = {b: e2e[f"{b}_{e2e_sizes[0][0]}"]["ticks_per_s"] for b in ("embedded", "redis")}
        print(
            f"\n{'backend':9} {'symbols':>9} {'ticks':>9} {'ticks/s':>10} {'vs 1K':>6} {'rebuild':>8} {'read again':>10}"
        )
        for key, r in e2e.items():
            backend, width = key.split("_")
            ratio = r["ticks_per_s"] / first[backend]
            print(f"{backend:9} {int(width):>9,} {int(r['ticks']):>9,} {r['ticks_per_s']:>10,.0f} {ratio:>6.2f} "
                  f"{r['rebuild_s']:>7.2f}s {int(r['rebuild_messages']):>10,}")  # fmt: skip
            figures |= {f"e2e_{key}_{name}": value for name, value in r.items()}
            figures[f"e2e_{key}_vs_1k"] = ratio
        notes += "; e2e_*: k2 ingest through Kafka and Iceberg, rebuild after a SIGKILL"
    write_result("bench_width", figures, quick=quick, notes=notes)


if __name__ == "__main__":
    main(sys.argv[1:])
