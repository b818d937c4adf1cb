"""Bytes per message where K2 keeps them, measured on K2's own tables and stores (the cost model's sizing).

    python -m benchmarks.bench_storage [--quick] [--symbols N] [--keys N] [--ids N]

1. Kafka: the mean framed Avro value (single-object header + body) and key (the symbol) of a trade
   and a quote, encoded by K2's batch codec from the data of step 2.
2. Iceberg: the ASX sample (real, 4 symbols, 5 days) and one simulated day (k2.feeds.simulator,
   ``--symbols`` symbols), each appended to K2's own tables (``k2.lake.tables``: partitioning,
   sort order and Parquet properties as shipped) over 200 streaming commits, then compacted with
   ``k2.lake.maintenance.compact``: data-file bytes / rows of the live snapshot, per kind.
3. Redis: ``--keys`` sequence keys committed through ``RedisSequenceStore`` and ``--ids`` dedup ids
   through ``RedisDedupStore``; bytes per key from ``MEMORY USAGE`` on each key (sampled) and from
   the rise of ``used_memory`` (which counts the hash table too).
4. Bloom: bytes per id of K2's filter (``WindowedBloom``, 10 M capacity, 0.1 %), from its arrays.

Redis is started through K2's launcher on a free port in a temporary directory, and stopped.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
from pathlib import Path
from typing import Any

import polars as pl

from benchmarks.bench_query import load_data, stream_in
from benchmarks.bench_state import _redis
from benchmarks.results import write_result
from k2.lake.maintenance import compact
from k2.lake.tables import ensure_tables
from k2.schemas import encode_batch
from k2.state.base import PartitionToken, batch_tokens
from k2.state.bloom import WindowedBloom
from k2.state.redis import RedisDedupStore, RedisSequenceStore, redis_client
from k2.state.synthetic import SyntheticFeed
from k2.state.tracker import SequenceTracker

__all__ = ["main"]


def kafka_bytes(frames: dict[str, pl.DataFrame], sample: int) -> dict[str, float]:
    out = {}
    for kind, frame in frames.items():
        part = frame.sample(min(sample, frame.height), seed=3)
        values = encode_batch(kind, part)
        keys = part["symbol"].str.len_bytes()
        out[f"kafka_{kind}_value_bytes"] = sum(map(len, values)) / len(values)
        out[f"kafka_{kind}_key_bytes"] = float(keys.mean())  # type: ignore[arg-type]
    return out


def _data_bytes(table: Any) -> tuple[int, int, int]:
    files = table.inspect.files().to_pylist()
    size = sum(f["file_size_in_bytes"] for f in files)
    rows = sum(f["record_count"] for f in files)
    return size, rows, len(files)


def lake_bytes(root: Path, name: str, data: dict[str, pl.DataFrame], commits: int) -> dict[str, float]:
    from pyiceberg.catalog.sql import SqlCatalog

    path = root / name
    path.mkdir(parents=True)
    catalog = SqlCatalog(name, uri=f"sqlite:///{path}/catalog.db", warehouse=f"file://{path}/warehouse")
    catalog.create_namespace_if_not_exists("k2")
    tables = ensure_tables(catalog, "k2")
    out: dict[str, float] = {}
    for kind in ("trades", "quotes"):
        stream_in(tables[kind], data[kind], commits, f"{name} {kind}")
        table = tables[kind].refresh()
        size, rows, files = _data_bytes(table)
        out[f"parquet_{name}_{kind}_streaming_bytes_per_row"] = size / rows
        compact(table)
        size_c, rows_c, files_c = _data_bytes(table.refresh())
        assert rows_c == rows, f"compaction changed {kind} rows: {rows} -> {rows_c}"
        out[f"parquet_{name}_{kind}_bytes_per_row"] = size_c / rows_c
        out[f"parquet_{name}_{kind}_rows"] = rows_c
        print(f"  {name} {kind}: {rows:,} rows; streaming {files} files, {size / rows:.1f} B/row; "
              f"compacted {files_c} files, {size_c / rows_c:.1f} B/row", flush=True)  # fmt: skip
    return out


def redis_bytes(data_dir: Path, keys: int, ids: int) -> dict[str, float]:
    out: dict[str, float] = {}
    with _redis(data_dir) as settings:
        client = redis_client(settings.redis)
        before = int(client.info("memory")["used_memory"])
        store = RedisSequenceStore(settings.redis.model_copy(update={"key_prefix": "bench:seq:"}))
        feed = SyntheticFeed(symbols=keys, fault_rate=0.0005, seed=5)
        tracker, expected = SequenceTracker("trades"), None
        for _ in range(3):  # every symbol seen, a few with open gaps
            batch = feed.next_batch(keys)
            result = tracker.classify(batch, store.load(tracker.keys(batch)))
            tokens = batch_tokens("k2.trades", batch, {0: expected})
            store.commit(result.states, tokens)
            expected = tokens[0].offset
        used = int(client.info("memory")["used_memory"]) - before
        names = [k for k in client.scan_iter(match="bench:seq:*", count=10_000) if b":tok" not in k]
        usage = [
            int(client.memory_usage(k, samples=0))
            for k in random.Random(1).sample(names, min(2_000, len(names)))
        ]
        out["redis_sequence_key_memory_usage_bytes"] = statistics.median(usage)
        out["redis_sequence_key_used_memory_bytes"] = used / len(names)
        out["redis_sequence_keys"] = len(names)
        print(f"  redis sequence state: {len(names):,} keys; MEMORY USAGE median {statistics.median(usage):.0f} B, "
              f"used_memory rise {used / len(names):.0f} B per key", flush=True)  # fmt: skip
        store.close()
        before = int(client.info("memory")["used_memory"])
        dedup = RedisDedupStore(
            settings.redis.model_copy(update={"key_prefix": "bench:dd:"}), "trades", ttl_s=3600
        )
        rng = random.Random(2)
        chunk = 50_000
        for lo in range(0, ids, chunk):
            batch = [f"{rng.getrandbits(128):032x}" for _ in range(min(chunk, ids - lo))]
            dedup.add(
                {0: batch}, [PartitionToken("k2.trades", 0, lo or None, lo + len(batch))], drop_before=0
            )
        used = int(client.info("memory")["used_memory"]) - before
        set_key = next(iter(client.scan_iter(match="bench:dd:*:g:*")))
        usage_set = int(client.memory_usage(set_key, samples=0))
        out["redis_dedup_id_memory_usage_bytes"] = usage_set / ids
        out["redis_dedup_id_used_memory_bytes"] = used / ids
        print(f"  redis dedup ids: {ids:,}; MEMORY USAGE {usage_set / ids:.1f} B/id, "
              f"used_memory rise {used / ids:.1f} B/id", flush=True)  # fmt: skip
        dedup.close()
        client.close()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="20 simulated symbols, 10 K keys, 200 K ids")
    parser.add_argument("--symbols", type=int, default=None)
    parser.add_argument("--keys", type=int, default=None)
    parser.add_argument("--ids", type=int, default=None)
    args = parser.parse_args(argv)
    symbols = args.symbols or (20 if args.quick else 100)
    keys = args.keys or (10_000 if args.quick else 100_000)
    ids = args.ids or (200_000 if args.quick else 1_000_000)
    figures: dict[str, float] = {}
    print(f"data: ASX sample + {symbols} simulated symbols, one day", flush=True)
    data = load_data(symbols)
    asx = {k: f.filter(pl.col("exchange") == "ASX") for k, f in data.items()}
    sim = {k: f.filter(pl.col("exchange") != "ASX") for k, f in data.items()}
    figures |= kafka_bytes(sim, 200_000)
    for kind in ("trades", "quotes"):
        print(f"  kafka {kind}: value {figures[f'kafka_{kind}_value_bytes']:.1f} B, "
              f"key {figures[f'kafka_{kind}_key_bytes']:.1f} B", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="k2-bench-storage-") as tmp:
        figures |= lake_bytes(Path(tmp), "asx", asx, 200)
        figures |= lake_bytes(Path(tmp), "sim", sim, 200)
        figures |= redis_bytes(Path(tmp) / "k2", keys, ids)
    full = WindowedBloom(capacity=10_000_000, error_rate=0.001, generations=4).full_nbytes()
    figures["bloom_bytes_per_id"] = full / 10_000_000
    print(f"  bloom: {figures['bloom_bytes_per_id']:.3f} B per id at 0.1 %", flush=True)
    write_result("bench_storage", figures, quick=args.quick)


if __name__ == "__main__":
    main()
