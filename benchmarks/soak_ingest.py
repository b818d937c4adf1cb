"""Soak: weeks of unattended ingest compressed into minutes, with queries running alongside.

    python -m benchmarks.soak_ingest [--commits 5000] [--every 1000] [--rate 500]   (make soak-ingest)
    python -m benchmarks.soak_ingest --commits 300 --every 100                       (make soak-short)
    python -m benchmarks.soak_ingest --commits 10000 --every 500 --minutes 75        (issue #17 goal 4)

Four processes: this driver, ``k2 feed simulate`` (50 symbols into a throwaway broker),
the ingester (K2's pipeline with maintenance on, as ``k2 ingest`` runs it) and ``k2 serve``.
The driver queries the API twice a second (a 15-minute window of one symbol, and its 1-minute
bars for the day) and prints, for every ``--every`` trades commits: commit latency p50/p99,
the newest metadata.json size and the count of metadata files, live data files per partition
(max and mean), bytes on disk, both queries' p99, and the RSS of the ingester and the server.

Time is compressed (``_scaled_lake``): commits every 0.2 s and a maintenance pass every 12 s
(defaults: 1 s and 60 s), checkpoints every 3 minutes and a 30-minute time-travel window, so the
snapshot history reaches its steady state during the run; everything sized in files, bytes and
counts keeps its default. It passes when the last block's commit p99 and both query p99s are
within 1.5x of the first block's.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.services import kafka_broker
from k2.config import Settings
from k2.feeds.market import symbol_names
from k2.lake import ensure_tables, open_catalog
from k2.services.process import free_port

__all__ = ["main"]

SYMBOLS = 50
SEED = 7
PY = sys.executable


def _scaled_lake() -> dict[str, Any]:
    """Commits and passes 5x as often as by default; retention windows short enough to turn over.

    Passes per checkpoint stay as by default (15), so tagging, thinning and expiry happen in the
    same proportions; the time-travel window is 30 minutes instead of a week, so checkpoints also
    leave it during the soak. Sizes and counts (keep_snapshots, target file, budget) are defaults.
    """
    return {
        "commit_interval_s": 0.2,
        "maintain_every_s": 12.0,
        "dense_minutes": 0.4,
        "checkpoint_minutes": 3.0,
        "coarse_after_hours": 0.2,
        "coarse_checkpoint_minutes": 6.0,
        "time_travel_hours": 0.5,
        "cold_minutes": 12.0,
        "orphan_grace_minutes": 2.0,
    }


def _env(settings: Settings, lake: dict[str, Any], api_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("K2_")}
    env.update({
        "K2_DATA_DIR": str(settings.data_dir),
        "K2_KAFKA__PORT": str(settings.kafka.port),
        "K2_KAFKA__CONTROLLER_PORT": str(settings.kafka.controller_port),
        "K2_API__PORT": str(api_port),
        "K2_LOG__LEVEL": "WARNING",
        "K2_LOG__FORMAT": "json",
        "K2_RESILIENCE__ENABLED": "false",  # a soak measures upkeep, not shedding
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"),
                                       str(Path(__file__).resolve().parents[1])]),
    })  # fmt: skip
    env.update({f"K2_LAKE__{k.upper()}": str(v) for k, v in lake.items()})
    return env


def _ingester(latency_file: str) -> None:
    """Child process: ``k2 ingest`` with each Iceberg commit's latency appended to a file."""
    from k2.config import load_settings
    from k2.lake import writer
    from k2.observability.logging import configure_logging
    from k2.pipeline import Pipeline
    from k2.pipeline.sequencing import sequence_checks

    settings = load_settings(log={"level": "INFO", "format": "json"})  # maintenance passes, in the log
    configure_logging(settings.log)
    out = open(latency_file, "a", buffering=1)  # noqa: SIM115 - held for the process's life
    commit = writer.TableWriter.commit

    def timed(self: writer.TableWriter, *args: Any, **kwargs: Any) -> int:
        began = time.perf_counter()
        sid = commit(self, *args, **kwargs)
        out.write(f"{self.name},{time.perf_counter() - began:.6f},{args[0].num_rows},{time.time():.3f}\n")
        return sid

    writer.TableWriter.commit = timed  # type: ignore[method-assign]
    pipeline = Pipeline(settings, checks=sequence_checks(settings))
    signal.signal(signal.SIGTERM, lambda *_: pipeline.stop())
    pipeline.run()


@contextmanager
def _child(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as sink:
        proc = subprocess.Popen(args, env=env, stdout=sink, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class _Queries(threading.Thread):
    """Query the API back to back; latencies are collected per block by the driver."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        import httpx

        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        self.symbol = symbol_names(SYMBOLS, SEED)[0]
        self.window: list[float] = []
        self.bars: list[float] = []
        self.errors = 0
        self.served = False
        self.running = True
        self.pause_s = 0.5

    def run(self) -> None:
        day = "2024-01-02"
        window = {"symbols": self.symbol, "start": f"{day}T11:00:00Z", "end": f"{day}T11:15:00Z",
                  "limit": 10_000, "format": "json"}  # fmt: skip
        bars = {"symbols": self.symbol, "start": f"{day}T00:00:00Z", "end": "2024-01-03T00:00:00Z",
                "interval": "1m", "format": "json"}  # fmt: skip
        while self.running:
            for path, params, sink in (("/v1/trades", window, self.window), ("/v1/bars", bars, self.bars)):
                began = time.perf_counter()
                try:
                    ok = self.client.get(path, params=params).status_code == 200
                except Exception:
                    ok = False
                if ok:
                    sink.append(time.perf_counter() - began)
                    self.served = True
                else:
                    self.errors += self.served  # before the first answer, the server is starting
                    time.sleep(0.5)  # the server may still be starting
            time.sleep(self.pause_s)  # a steady query load, not a saturated server

    def take(self) -> tuple[list[float], list[float]]:
        window, self.window = self.window, []
        bars, self.bars = self.bars, []
        return window, bars


def _lake_shape(settings: Settings) -> dict[str, float]:
    catalog = open_catalog(settings)
    table = catalog.load_table(f"{settings.lake.namespace}.trades")
    meta_dir = Path(table.location().removeprefix("file://")) / "metadata"
    jsons = sorted(meta_dir.glob("*.metadata.json"), key=lambda p: p.stat().st_mtime)
    per_partition: dict[tuple[object, ...], int] = {}
    for task in table.scan().plan_files():
        key = tuple(task.file.partition)
        per_partition[key] = per_partition.get(key, 0) + 1
    counts = list(per_partition.values()) or [0]
    return {
        "meta_kb": jsons[-1].stat().st_size / 1024 if jsons else 0.0,
        "meta_json": len(jsons),
        "meta_files": sum(1 for _ in meta_dir.iterdir()),
        "snapshots": len(table.snapshots()),
        "files_max": max(counts),
        "files_mean": float(np.mean(counts)),
        "partitions": len(per_partition),
    }


def _p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


HEADER = (f"{'commits':>8} {'rows/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'meta KB':>8} {'json':>5} {'mfiles':>6} {'snaps':>5} "
          f"{'files/part max':>14} {'mean':>5} {'disk MB':>8} {'win p99':>8} {'bars p99':>8} "
          f"{'RSS ing':>8} {'RSS api':>8} {'load':>5}")  # fmt: skip


def run(commits: int, every: int, rate: int, minutes: float = 0.0) -> bool:
    lake = _scaled_lake()
    with kafka_broker(heap="512m", partitions=4) as settings:
        api_port = free_port()
        env = _env(settings, lake, api_port)
        ensure_tables(open_catalog(settings), settings.lake.namespace)
        data = settings.data_dir
        latencies = data / "commit-latency.csv"
        latencies.touch()
        print("time-compressed lake settings:", lake, flush=True)
        feed = [PY, "-m", "k2.cli", "feed", "simulate", "--symbols", str(SYMBOLS), "--seed", str(SEED),
                "--rate", str(rate), "--tick-rate", "0.2", "--duration", "86400"]  # fmt: skip
        ingest = [PY, "-m", "benchmarks.soak_ingest", "--ingester", str(latencies)]
        serve = [PY, "-m", "k2.cli", "serve", "--port", str(api_port)]
        with (
            _child(feed, env, data / "feed.log"),
            _child(ingest, env, data / "ingest.log") as ingester,
            _child(serve, env, data / "serve.log") as server,
        ):
            queries = _Queries(api_port)
            queries.start()
            rows: list[dict[str, float]] = []
            seen: list[float] = []
            sizes: list[int] = []  # rows per trades commit
            ends: list[float] = []  # each trades commit's wall-clock end
            offset = 0
            print(HEADER, flush=True)
            began = time.monotonic()
            while len(seen) < commits and not (minutes and time.monotonic() - began > minutes * 60):
                time.sleep(1.0)
                if ingester.poll() is not None:
                    raise SystemExit(f"the ingester died; see {data / 'ingest.log'}")
                with open(latencies) as f:
                    f.seek(offset)
                    chunk = f.read()
                cut = chunk.rfind("\n") + 1
                offset += cut
                for t, v, n, end in (ln.split(",") for ln in chunk[:cut].splitlines()):
                    if t == "trades":
                        seen.append(float(v))
                        sizes.append(int(n))
                        ends.append(float(end))
                while len(seen) >= (len(rows) + 1) * every:
                    lo, hi = len(rows) * every, (len(rows) + 1) * every
                    block = seen[lo:hi]
                    # rows committed in the block over the wall time since the previous block's last commit
                    span = ends[hi - 1] - (ends[lo - 1] if lo else ends[0] - block[0])
                    rate_rows = sum(sizes[lo:hi]) / span if span > 0 else float("nan")
                    window, bars = queries.take()
                    row = {"commits": hi, "p50": _p(block, 50), "p99": _p(block, 99), "rows_s": rate_rows,
                           **_lake_shape(settings), "disk_mb": _du(data / "warehouse") / 2**20,
                           "win_p99": _p(window, 99), "bars_p99": _p(bars, 99),
                           "rss_ing": _rss_mb(ingester.pid), "rss_api": _rss_mb(server.pid),
                           "load": float(Path("/proc/loadavg").read_text().split()[0])}  # fmt: skip
                    rows.append(row)
                    print(f"{row['commits']:>8} {row['rows_s']:>7.0f} {row['p50']:>7.0f} {row['p99']:>7.0f} "
                          f"{row['meta_kb']:>8.0f} "
                          f"{row['meta_json']:>5.0f} {row['meta_files']:>6.0f} {row['snapshots']:>5.0f} "
                          f"{row['files_max']:>14.0f} {row['files_mean']:>5.1f} {row['disk_mb']:>8.1f} "
                          f"{row['win_p99']:>8.0f} {row['bars_p99']:>8.0f} {row['rss_ing']:>8.0f} "
                          f"{row['rss_api']:>8.0f} {row['load']:>5.1f}", flush=True)  # fmt: skip
            queries.running = False
        print(
            f"{len(seen)} trades commits in {time.monotonic() - began:.0f} s; query errors {queries.errors}"
        )
        if not rows:
            print("no block completed")
            return False
        first, last = rows[0], rows[-1]
        verdict = {k: last[k] / first[k] for k in ("p99", "win_p99", "bars_p99") if first[k] > 0}
        ok = all(v <= 1.5 for v in verdict.values())
        # the ingest rate stays flat (issue #17 goal 4): the last block ingests at >= 2/3 of the first's rate
        rate_ratio = last["rows_s"] / first["rows_s"] if first["rows_s"] > 0 else float("nan")
        print(
            f"ingest rate last/first block: {last['rows_s']:.0f} / {first['rows_s']:.0f} rows/s = "
            f"{rate_ratio:.2f} (goal >= 0.67, flat)",
            "PASS" if rate_ratio >= 2 / 3 else "FAIL",
        )
        ok = ok and rate_ratio >= 2 / 3
        print("last/first block:", {k: round(v, 2) for k, v in verdict.items()}, "PASS" if ok else "FAIL")
        return ok


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--commits", type=int, default=5000, help="Trades commits to run.")
    parser.add_argument("--every", type=int, default=1000, help="Print a row every this many commits.")
    parser.add_argument("--rate", type=int, default=500, help="Simulated ticks per second.")
    parser.add_argument(
        "--minutes",
        type=float,
        default=0.0,
        help="Stop after this long even short of --commits (0: no limit); judged on the blocks done.",
    )
    parser.add_argument("--ingester", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.ingester:
        _ingester(args.ingester)
        return
    sys.exit(0 if run(args.commits, args.every, args.rate, args.minutes) else 1)


if __name__ == "__main__":
    main()
