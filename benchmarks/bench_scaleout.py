"""N ``k2 ingest`` processes in one consumer group: rows/s for 1, 2 and 4 processes, and per core.

    python -m benchmarks.bench_scaleout [--quick] [--rows N] [--processes 1,2,4] [--partitions 8]
                                        [--brokers 1,3]

1. ``rows`` trades are produced once to a topic of ``partitions`` partitions.
2. For each process count, that many real ``k2 ingest`` subprocesses join one consumer group over
   a fresh lake namespace (one catalog, one warehouse, one embedded state directory, as on one
   machine), and share the partitions. The rate is the rows committed after the first commit, over
   the time from that commit to the last, read from the table itself (each process's start-up is
   excluded; a rebalance as the others join is not).
3. Exactness: the table then holds every row once (message ids unique, count equal to ``rows``).
4. Baseline in the same run: one raw confluent-kafka consumer reading the same topic.
5. ``--brokers 1,3`` repeats all of it on one broker and on a 3-node KRaft cluster on this machine
   (replication 3, min.insync.replicas 2, acks=all): the producer's rate, the raw consumer's and
   the ingesters' side by side, so the price of replication is measured, not guessed.

"Per core" divides by min(processes, cores): on this 2-core machine four processes share two cores,
so the curve flattens at two, and what is left is the cost of more group members.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import polars as pl

from benchmarks.bench_codec import make_ticks
from benchmarks.bench_ingest import _produce, _raw_consume
from benchmarks.results import write_result
from benchmarks.services import kafka_broker, stop_process
from k2.config import LogSettings, Settings, load_settings
from k2.lake import open_catalog
from k2.observability.logging import configure_logging
from k2.stream.admin import ensure_topics

__all__ = ["main"]


def _env(settings: Settings, namespace: str, group: str, instance: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("K2_")}
    env.update(
        K2_DATA_DIR=str(settings.data_dir),
        K2_KAFKA__PORT=str(settings.kafka.port),
        K2_KAFKA__CONTROLLER_PORT=str(settings.kafka.controller_port),
        K2_KAFKA__TOPIC_PREFIX=settings.kafka.topic_prefix,
        K2_KAFKA__PARTITIONS=str(settings.kafka.partitions),
        K2_KAFKA__BROKERS=str(settings.kafka.brokers),
        K2_LAKE__NAMESPACE=namespace,
        K2_LAKE__COMMIT_INTERVAL_S="1.0",
        K2_LAKE__COMMIT_ROWS="200000",
        K2_PIPELINE__GROUP_ID=group,
        K2_PIPELINE__INSTANCE_ID=instance,
        K2_RESILIENCE__ENABLED="false",  # the write path itself, as in bench_ingest
        K2_LOG__LEVEL="WARNING",
    )
    return env


def _rows(settings: Settings, namespace: str) -> int:
    catalog = open_catalog(settings)
    try:
        table = catalog.load_table(f"{namespace}.trades")
    except Exception:
        return 0
    snapshot = table.current_snapshot()
    return int(snapshot.summary.get("total-records", 0)) if snapshot and snapshot.summary else 0


def _run(settings: Settings, rows: int, processes: int, logs: Path) -> tuple[float, float]:
    """Rows/s of ``processes`` ingesters (first committed row to the last) and the wall seconds."""
    tag = uuid.uuid4().hex[:8]
    namespace, group = f"scale_{processes}_{tag}", f"scale-{tag}"
    began = time.perf_counter()
    procs = []
    for i in range(processes):
        log = (logs / f"{namespace}-{i}.log").open("wb")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "k2.cli", "ingest", "--idle-timeout", "8"],
                env=_env(settings, namespace, group, f"p{i}"),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    first: float | None = None
    done = at_first = 0
    try:
        while done < rows:
            if time.perf_counter() - began > 900 or all(p.poll() is not None for p in procs):
                raise RuntimeError(
                    f"{processes} ingesters stopped at {done:,} of {rows:,} rows (logs in {logs})"
                )
            time.sleep(0.2)
            done = _rows(settings, namespace)
            if done and first is None:
                first, at_first = time.perf_counter(), done
        last = time.perf_counter()
    finally:
        for p in procs:
            stop_process(p)
    _exact(settings, namespace, rows)
    # the rows committed after the first commit was seen, over the time since: a first commit that
    # already held most rows (a small run) must not be counted as if written in no time
    elapsed = last - (first or last)
    if elapsed <= 0 or rows - at_first < rows // 4:
        # the rows are exact (checked above); only the rate cannot be told: say so, keep the other runs
        print(
            f"WARNING {processes} ingester(s): {at_first:,} of {rows:,} rows were in the first commit seen, "
            "too few left to time (rate printed as nan): run with more --rows",
            flush=True,
        )
        return float("nan"), last - began
    return (rows - at_first) / elapsed, last - began


def _exact(settings: Settings, namespace: str, rows: int) -> None:
    table = open_catalog(settings).load_table(f"{namespace}.trades")
    ids = table.scan(selected_fields=("message_id",)).to_arrow().column("message_id")
    unique = len(set(ids.to_pylist()))
    assert len(ids) == rows == unique, f"{namespace}: {len(ids):,} rows, {unique:,} unique, {rows:,} sent"


def _one_cluster(
    frame: pl.DataFrame, brokers: int, partitions: int, counts: list[int]
) -> tuple[float, float, dict[int, tuple[float, float]]]:
    """On a fresh cluster of ``brokers`` nodes: produce rows/s, raw consume rows/s, and per count
    of ingesters their rows/s and wall seconds."""
    rows = frame.height
    with (
        kafka_broker(heap="1g" if brokers == 1 else "512m", partitions=partitions, brokers=brokers) as base,
        tempfile.TemporaryDirectory(prefix="k2-bench-scale-") as tmp,
    ):
        settings = load_settings(
            data_dir=Path(tmp) / "k2",
            kafka={**base.kafka.model_dump(), "topic_prefix": f"s{uuid.uuid4().hex[:8]}."},
        )
        ensure_topics(settings.kafka, ["trades", "quotes", "reference", "dlq"])  # not timed: creation
        began = time.perf_counter()
        _produce(settings, frame)
        produced = rows / (time.perf_counter() - began)
        raw = _raw_consume(settings, rows)
        logs = Path(tmp) / "logs"
        logs.mkdir()
        results: dict[int, tuple[float, float]] = {}
        for n in counts:
            print(f"{brokers} broker(s), {n} ingester(s) …", flush=True)
            results[n] = _run(settings, rows, n, logs)
    return produced, raw, results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="400,000 rows")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--processes", default="1,2,4", help="comma-separated process counts")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument(
        "--brokers",
        default="1",
        help="comma-separated Kafka cluster sizes, e.g. 1,3 (3: replication 3, acks=all)",
    )
    args = parser.parse_args(argv)
    rows = args.rows or (400_000 if args.quick else 2_000_000)
    counts = [int(n) for n in args.processes.split(",")]
    cores = os.cpu_count() or 1
    configure_logging(LogSettings(level="WARNING"))
    print(f"generating {rows:,} trades …", flush=True)
    frame = make_ticks("trades", rows, seed=1)
    brokers = [int(n) for n in args.brokers.split(",")]
    runs = {b: _one_cluster(frame, b, args.partitions, counts) for b in brokers}
    print(
        f"\n{rows:,} trades, {args.partitions} partitions, {cores} cores; every table exact (each row once)"
    )
    print(
        f"{'brokers':>7} {'processes':>9} {'rows/s':>12} {'per core':>10} {'vs 1 proc':>10} {'vs raw':>8} {'wall s':>8}"
    )
    for b, (_, raw, results) in runs.items():
        one = results.get(1, (float("nan"), 0.0))[0]
        for n, (rate, wall) in results.items():
            per_core = rate / min(n, cores)
            print(
                f"{b:>7} {n:>9} {rate:12,.0f} {per_core:10,.0f} {rate / one:10.2f} {rate / raw:8.2f} {wall:8.1f}"
            )
        print(f"{b:>7} {'raw':>9} {raw:12,.0f}   (one confluent-kafka consumer, same topic, this run)")
    if len(runs) > 1:
        first = brokers[0]
        print(f"\nby cluster size, against {first} broker(s) in this run:")
        print(
            f"{'brokers':>7} {'produce/s':>12} {'vs':>6} {'raw/s':>12} {'vs':>6} {'1 ingester/s':>13} {'vs':>6}"
        )
        p0, r0, res0 = runs[first]
        i0 = res0.get(1, (float("nan"), 0.0))[0]
        for b, (produced, raw, results) in runs.items():
            i1 = results.get(1, (float("nan"), 0.0))[0]
            print(
                f"{b:>7} {produced:12,.0f} {produced / p0:6.2f} {raw:12,.0f} {raw / r0:6.2f} {i1:13,.0f} {i1 / i0:6.2f}"
            )
    result: dict[str, float | int] = {"rows": rows, "partitions": args.partitions, "cores": cores}
    for b, (produced, raw, results) in runs.items():
        tag = "" if b == 1 else f"{b}_brokers_"
        result[f"{tag}produce_rows_per_s"] = produced
        result[f"{tag}raw_consume_rows_per_s"] = raw
        result.update({f"{tag}ingest_{n}_procs_rows_per_s": rate for n, (rate, _) in results.items()})
    write_result("bench_scaleout", result, quick=args.quick)


if __name__ == "__main__":
    main()
