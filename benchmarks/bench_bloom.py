"""Bloom filters for dedup's first tier: K2's NumPy filter against the Python libraries (ADR 003).

    python -m benchmarks.bench_bloom [--quick] [--ids N] [--repeats R]

Every filter is sized for ``--ids`` ids (default 1,000,000; --quick 200,000; the pure-Python ones
``--slow-ids``, 200,000) at a 0.1 % false-positive rate, then given the same ids as the pipeline has them (32-character hex BLAKE2b-128 message ids, a
polars Series): add all, look all up again (members), look up as many other ids (non-members: the
measured false-positive rate). K2's ``WindowedBloom`` (one generation) takes the whole batch, its hex
to bytes conversion included; the libraries take one Python call per id (rbloom also has a batch
``update`` for adds, timed too). Bytes per key are the filter's own bit array over the ids it holds.
RedisBloom (BF.MADD / BF.MEXISTS) is measured only if the running Redis has the module loaded: the
Redis that K2 starts (Debian's redis-server 7.0) has none, and no package ships it (see ADR 003).
Rates are medians of ``--repeats`` runs, each run building a fresh filter, all in this process.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl

from benchmarks.results import write_result
from k2.state.bloom import WindowedBloom
from k2.state.ids import id_bytes

__all__ = ["main"]

P = 0.001
_PURE_PYTHON = ("pybloom-live", "bloom-filter2")


def _k2(n: int) -> tuple[Callable[[Any], None], Callable[[Any], np.ndarray], Callable[[], int]]:
    bloom = WindowedBloom(capacity=n, error_rate=P, generations=1)
    bloom.rotate(0)
    return (
        (lambda ids: bloom.add(0, id_bytes(ids))),
        (lambda ids: bloom.contains(id_bytes(ids))),
        lambda: bloom.nbytes,
    )


def _per_id(make: Callable[[int], Any], nbytes: Callable[[Any], int], batch_add: bool = False) -> Callable:
    def build(n: int) -> tuple[Callable[[Any], None], Callable[[Any], np.ndarray], Callable[[], int]]:
        f = make(n)

        def add(ids: pl.Series) -> None:
            if batch_add:
                f.update(ids.to_list())
            else:
                for x in ids.to_list():
                    f.add(x)

        def contains(ids: pl.Series) -> np.ndarray:
            return np.fromiter((x in f for x in ids.to_list()), dtype=bool, count=len(ids))

        return add, contains, lambda: nbytes(f)

    return build


def _stable(text: str) -> int:
    """rbloom's hash for a filter that is saved and loaded: the id's own 128 bits, signed.

    rbloom's default is Python's ``hash()``, salted per process (PYTHONHASHSEED), so a filter saved
    by one process answers nonsense in the next; K2 saves its filter at every checkpoint.
    """
    return int(text, 16) - (1 << 127)


def _peers() -> tuple[dict[str, Callable], dict[str, str]]:
    """The filters that import here; the others with the error their import raised."""
    made: dict[str, Callable] = {"k2 WindowedBloom (NumPy, batch)": _k2}
    missing: dict[str, str] = {}
    specs: list[tuple[str, str, Callable[[Any], Callable]]] = [
        ("rbloom (per id)", "rbloom", lambda m: _per_id(lambda n: m.Bloom(n, P), lambda f: f.size_in_bits // 8)),
        ("rbloom (update per batch)", "rbloom",
         lambda m: _per_id(lambda n: m.Bloom(n, P), lambda f: f.size_in_bits // 8, batch_add=True)),
        ("rbloom (stable hash, per id)", "rbloom",
         lambda m: _per_id(lambda n: m.Bloom(n, P, hash_func=_stable), lambda f: f.size_in_bits // 8)),
        ("pybloom-live", "pybloom_live",
         lambda m: _per_id(lambda n: m.BloomFilter(capacity=n, error_rate=P), lambda f: f.num_bits // 8)),
        ("bloom-filter2", "bloom_filter2",
         lambda m: _per_id(lambda n: m.BloomFilter(max_elements=n, error_rate=P), lambda f: f.num_bits_m // 8)),
    ]  # fmt: skip
    for label, module, wrap in specs:
        try:
            made[label] = wrap(importlib.import_module(module))
        except ImportError as exc:
            missing[label] = f"{type(exc).__name__}: {exc}"
    return made, missing


def _redisbloom_note() -> str:
    """Whether a Redis with the bloom module is reachable through K2's launcher (it never is here)."""
    import shutil
    import subprocess

    server = shutil.which("redis-server")
    if not server:
        return "no redis-server on PATH"
    version = subprocess.run([server, "--version"], capture_output=True, text=True).stdout.strip()
    return f"{version}: no BF.* commands (RedisBloom is a separate module, not shipped by Debian)"


def measure(build: Callable, members: pl.Series, others: pl.Series, repeats: int) -> dict[str, float]:
    adds, hits, misses, fps, size = [], [], [], [], 0
    n = len(members)
    for _ in range(repeats):
        add, contains, nbytes = build(n)
        t = time.perf_counter()
        add(members)
        adds.append(n / (time.perf_counter() - t))
        t = time.perf_counter()
        found = contains(members)
        hits.append(n / (time.perf_counter() - t))
        assert found.all(), "a Bloom filter has no false negatives"
        t = time.perf_counter()
        fp = contains(others)
        misses.append(n / (time.perf_counter() - t))
        fps.append(float(fp.mean()))
        size = nbytes()
    return {
        "add_per_s": statistics.median(adds),
        "contains_members_per_s": statistics.median(hits),
        "contains_others_per_s": statistics.median(misses),
        "bytes_per_key": size / n,
        "fp_rate": statistics.median(fps),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="200,000 ids, 3 repeats")
    parser.add_argument("--ids", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--slow-ids", type=int, default=200_000,
        help="ids for the pure-Python filters (pybloom-live, bloom-filter2): their rate per id does not "
        "depend on n, and 1 M ids at ~10 K/s would take minutes per pass",
    )  # fmt: skip
    args = parser.parse_args(argv)
    n = args.ids or (200_000 if args.quick else 1_000_000)
    raw = np.random.default_rng(1).bytes(32 * n).hex()
    members = pl.Series([raw[i : i + 32] for i in range(0, 32 * n, 32)])
    others = pl.Series([raw[i : i + 32] for i in range(32 * n, 64 * n, 32)])
    made, missing = _peers()
    results = {}
    slow = min(n, args.slow_ids)
    sizes = {}
    for label, build in made.items():
        k = slow if label in _PURE_PYTHON else n
        sizes[label] = k
        print(f"  {label} ({k:,} ids) …", flush=True)
        results[label] = measure(build, members[:k], others[:k], args.repeats)
    base = results["k2 WindowedBloom (NumPy, batch)"]
    print(
        f"\n{n:,} hex ids ({slow:,} for {', '.join(_PURE_PYTHON)}), each filter sized for its ids at "
        f"p = {P}; medians of {args.repeats} runs; ratios = K2 / filter"
    )
    print(f"{'filter':32} {'add/s':>12} {'contains/s':>12} {'(non-members)':>14} {'B/key':>7} {'FP rate':>9}"
          f" {'K2 add x':>9} {'K2 contains x':>14}")  # fmt: skip
    for label, r in results.items():
        print(f"{label:32} {r['add_per_s']:12,.0f} {r['contains_members_per_s']:12,.0f} "
              f"{r['contains_others_per_s']:14,.0f} {r['bytes_per_key']:7.3f} {r['fp_rate']:9.5f} "
              f"{base['add_per_s'] / r['add_per_s']:9.1f} "
              f"{base['contains_others_per_s'] / r['contains_others_per_s']:14.1f}")  # fmt: skip
    redis_note = _redisbloom_note()
    print(f"{'RedisBloom':32} not measured: {redis_note}")
    for label, why in missing.items():
        print(f"{label:32} not installed: {why}")
    figures: dict[str, float] = {"ids": n, "slow_ids": slow, "error_rate": P}
    for label, r in results.items():
        key = label.split(" (")[0].replace(" ", "_").replace("-", "_").lower()
        key += {"(update per batch)": "_update", "(stable hash, per id)": "_stable"}.get(
            label[label.find("(") :], ""
        )
        figures |= {f"{key}_{k}": v for k, v in r.items()}
    write_result(
        "bench_bloom",
        figures,
        quick=args.quick,
        notes="RedisBloom: " + redis_note + "; " + "; ".join(f"{k}: {v}" for k, v in missing.items()),
    )


if __name__ == "__main__":
    main()
