"""Idle Redis state: an hourly sweep (k2.state.sweep) against a TTL refreshed on every commit.

A TTL per key must be renewed whenever the key is written (PEXPIRE beside each SET), on the
commit's hot path; the sweep costs nothing per commit and one SCAN + MGET of all keys per hour.
Run: ``python -m benchmarks.bench_sweep [--quick] [--keys 200000] [--batch 2000]``; prints both costs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks.bench_state import _redis
from benchmarks.results import write_result
from k2.state import PartitionToken, RedisSequenceStore
from k2.state.model import KeyState, encode_state
from k2.state.redis import redis_client
from k2.state.sweep import sweep_idle

DAY = 20_000


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="20,000 keys, 10 commits")
    parser.add_argument("--keys", type=int, default=None, help="symbols' keys in Redis (200,000)")
    parser.add_argument("--batch", type=int, default=2_000, help="keys written per commit")
    parser.add_argument("--commits", type=int, default=None, help="commits timed per variant (50)")
    args = parser.parse_args(argv)
    args.keys = args.keys or (20_000 if args.quick else 200_000)
    args.commits = args.commits or (10 if args.quick else 50)
    figures: dict[str, float] = {"keys": args.keys, "batch": args.batch}
    with tempfile.TemporaryDirectory(prefix="k2-bench-sweep-") as tmp, _redis(Path(tmp) / "k2") as settings:
        client = redis_client(settings.redis)
        prefix = settings.redis.key_prefix
        store = RedisSequenceStore(settings.redis, commit_mode="lua")
        keys = [("trades", "ASX", f"S{i:07d}") for i in range(args.keys)]
        for lo in range(0, args.keys, 10_000):  # a tenth idle (50 days behind)
            store.commit(
                {
                    k: KeyState(DAY - 50 if i % 10 == 0 else DAY, 5)
                    for i, k in enumerate(keys[lo : lo + 10_000], lo)
                },
                [],
            )
        batch = {k: KeyState(DAY, 6) for k in keys[: args.batch]}
        names = [f"{prefix}seq:{k[0]}:{k[1]}:{k[2]}" for k in batch]
        values = [encode_state(v) for v in batch.values()]

        def commit_plain(i: int) -> None:
            store.commit(batch, [PartitionToken("t", 0, i or None, i + 1)])

        def commit_ttl(i: int) -> None:  # the alternative: every written key's TTL renewed
            pipe = client.pipeline(transaction=True)
            pipe.mset(dict(zip(names, values, strict=True)))
            for name in names:
                pipe.pexpire(name, 30 * 86_400_000)
            pipe.execute()

        variants = (
            ("commit (MSET)", "commit_ms", commit_plain),
            ("commit + PEXPIRE per key", "commit_ttl_ms", commit_ttl),
        )
        for label, figure, fn in variants:
            began = time.perf_counter()
            for i in range(args.commits):
                fn(i + 1000 * (figure != "commit_ms"))
            ms = (time.perf_counter() - began) * 1000 / args.commits
            figures[figure] = ms
            print(f"{label:<28} {args.batch:,} keys: {ms:7.1f} ms per commit")
        began = time.perf_counter()
        result = sweep_idle(client, prefix, 30)
        figures |= {
            "sweep_s": time.perf_counter() - began,
            "swept_keys": result.scanned,
            "idle_deleted": result.deleted,
        }
        print(f"sweep of {result.scanned:,} keys ({result.deleted:,} idle deleted): "
              f"{figures['sweep_s']:.2f} s")  # fmt: skip
    write_result("bench_sweep", figures, quick=args.quick)


if __name__ == "__main__":
    main()
