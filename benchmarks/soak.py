"""API soak: N concurrent clients for a few minutes against a real `k2 serve` on loopback.

``python -m benchmarks.soak [--clients 12] [--seconds 600] [--quick]`` (``make soak``). It starts Kafka
through K2's launcher, loads the ASX sample into a throwaway lake, runs ``k2 serve`` as its own
process, and drives every route with good requests, hostile parameters (malformed symbols,
400-digit intervals, absurd speeds, wrong keys, junk methods, forged X-Forwarded-For) and slow
readers of replays and live streams. Every loop is bounded in time and every request has a
timeout; all traffic goes to 127.0.0.1.

It prints requests/s, p50/p99 per route, responses by status, and the server's RSS and thread
count sampled every ``--sample-s`` (1) seconds. The first half of the run is warm-up: DuckDB's
buffer pool, the row and partial caches and the hybrid tail cache fill towards their caps, and the
thread pool grows to its size. Over the second half it fits a line to RSS and reports the slope in
MiB/min with its standard error (fitted to 30 s means: RSS swings by tens of MiB for seconds at a
time, as responses are built and freed). The soak passes when there is no 5xx, growth above ``--max-slope``
(1 MiB/min) is not shown (slope minus two standard errors below it), and the thread count ends no
higher than its peak during warm-up.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import psutil

from benchmarks.bench_query import append_stamped
from benchmarks.services import kafka_broker
from k2.config import Settings
from k2.feeds import read_asx
from k2.lake import ensure_tables, open_catalog
from k2.services.process import free_port
from k2.stream.admin import ensure_topics

__all__ = ["main"]

ASX_DIR = Path(__file__).resolve().parents[1] / "data" / "asx-2014-03"
KEYS = ["soak-key-1", "soak-key-2", "soak-key-3"]
WINDOW = {"start": "2014-03-10T23:00:00Z", "end": "2014-03-11T05:00:00Z"}
DAY = {"start": "2014-03-10T13:00:00Z", "end": "2014-03-11T13:00:00Z"}

Request = tuple[str, str, dict[str, Any], dict[str, str]]  # method, path, params, headers
#: Shorter runs (--quick) report RSS but do not judge it: half of it is too little steady state.
_MIN_JUDGED_S = 120


def _load_lake(settings: Settings) -> None:
    tables = ensure_tables(open_catalog(settings), settings.lake.namespace)
    delivery = read_asx(ASX_DIR).delivery
    for kind, frame in (("trades", delivery.trades), ("quotes", delivery.quotes)):
        table = tables[kind]
        frame = frame.with_columns(
            pl.lit(0, dtype=pl.Int32).alias("kafka_partition"),
            pl.int_range(0, frame.height, dtype=pl.Int64).alias("kafka_offset"),
        )
        append_stamped(table, frame)  # K2's tables carry a commit stamp per row


def _good(rng: random.Random) -> Request:
    sym = rng.choice(["BHP", "RIO", "BHP,RIO"])
    key = {"X-API-Key": rng.choice(KEYS)}
    return rng.choice(
        [
            ("GET", "/v1/trades", {"symbols": sym, **WINDOW, "limit": 500}, key),
            ("GET", "/v1/quotes", {"symbols": sym, **WINDOW, "limit": 500}, key),
            ("GET", "/v1/bars", {"symbols": sym, **DAY, "interval": rng.choice(["1m", "5m", "1h"])}, key),
            ("GET", "/v1/trades-with-quotes", {"symbols": "BHP", **WINDOW, "limit": 200}, key),
            ("GET", "/v1/latest", {"symbols": sym}, key),
            ("GET", "/v1/snapshots", {"table": rng.choice(["trades", "quotes"])}, key),
            ("GET", "/v1/symbols", {"symbols": sym}, key),
            ("GET", "/v1/gaps", {"symbols": sym}, key),
            ("GET", "/v1/trades/recent", {"symbol": "BHP", "minutes": 60}, key),
            ("GET", "/v1/quotes/recent", {"symbol": "BHP", "minutes": 60}, key),
            ("GET", "/v1/bars/live", {"symbol": "BHP", "minutes": 60}, key),
            ("GET", "/health", {}, rng.choice([key, {}])),
            ("GET", "/metrics", {}, {}),
        ]
    )


def _hostile(rng: random.Random) -> Request:
    key = {"X-API-Key": KEYS[0]}
    huge = "9" * 400
    return rng.choice(
        [
            ("GET", "/v1/trades", {"symbols": "B;P", **WINDOW}, key),
            ("GET", "/v1/trades", {"symbols": "X" * 5000, **WINDOW}, key),
            ("GET", "/v1/trades", {"symbols": "BHP", "start": "yesterday-ish", "end": huge}, key),
            ("GET", "/v1/trades", {"symbols": "BHP", **WINDOW, "limit": huge}, key),
            ("GET", "/v1/bars", {"symbols": "BHP", **DAY, "interval": huge}, key),
            ("GET", "/v1/trades-with-quotes", {"symbols": "BHP", **WINDOW, "tolerance": huge + "s"}, key),
            ("GET", "/v1/replay", {"symbols": "BHP", **WINDOW, "speed": "1e-9"}, key),
            ("GET", "/v1/replay", {"symbols": "BHP", **WINDOW, "speed": "nan"}, key),
            ("GET", "/v1/trades", {"symbols": "BHP", **WINDOW, "snapshot_id": "-1"}, key),
            ("GET", "/v1/trades", {"symbols": "BHP", **WINDOW, "cursor": "not-a-cursor"}, key),
            ("GET", "/v1/latest", {"symbols": "BHP"}, {"X-API-Key": f"guess-{rng.random()}"}),
            ("GET", "/v1/latest", {"symbols": "BHP"}, {**key, "X-Forwarded-For": "203.0.113.7"}),
            ("GET", "/v1/latest", {"symbols": "BHP"}, {**key, "X-Correlation-ID": "x" * 4000}),
            (rng.choice(["FOO", "PROPFIND", "TRACE"]), "/v1/latest", {}, key),
            ("GET", "/v1/../../etc/passwd", {}, key),
            ("GET", f"/nope/{rng.random()}", {}, {}),
        ]
    )


def _slow_reader(url: str, deadline: float, stats: Stats, rng: random.Random) -> None:
    """Open a replay or a live stream, read a little, dawdle, hang up."""
    key = {"X-API-Key": rng.choice(KEYS)}
    if rng.random() < 0.5:
        path, params = "/v1/replay", {"symbols": "BHP", **WINDOW, "speed": "60", "stream": "sse"}
    else:
        path, params = "/v1/stream", {"symbols": "BHP,RIO", "duration": "20"}
    started = time.perf_counter()
    try:
        with httpx.Client(base_url=url, timeout=30) as http, http.stream("GET", path, params=params,
                                                                         headers=key) as response:  # fmt: skip
            stats.record(path, response.status_code, time.perf_counter() - started)
            for n, _chunk in enumerate(response.iter_bytes()):
                if n >= 20 or time.monotonic() > deadline:
                    break
                time.sleep(rng.uniform(0.05, 0.5))
    except httpx.HTTPError as exc:
        stats.record(path, f"client:{type(exc).__name__}", time.perf_counter() - started)


class Stats:
    """Latencies per route and counts per status, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.status: Counter[str] = Counter()

    def record(self, route: str, status: int | str, seconds: float) -> None:
        with self._lock:
            self.latency[route].append(seconds)
            self.status[str(status)] += 1


#: Idle connections are dropped by the client before uvicorn's 5 s keep-alive closes them: reusing
#: one the server is closing fails with a ReadError that says nothing about K2 (the keep-alive race).
_LIMITS = httpx.Limits(keepalive_expiry=4.0)


def _worker(url: str, deadline: float, stats: Stats, seed: int) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=30, limits=_LIMITS) as http:
        while time.monotonic() < deadline:
            roll = rng.random()
            if roll < 0.05:
                _slow_reader(url, deadline, stats, rng)
                continue
            method, path, params, headers = _hostile(rng) if roll < 0.30 else _good(rng)
            started = time.perf_counter()
            try:
                response = http.request(method, path, params=params, headers=headers)
                status: int | str = response.status_code
            except httpx.HTTPError as exc:
                status = f"client:{type(exc).__name__}"
            route = (
                path if path.startswith(("/v1/", "/health", "/metrics")) and ".." not in path else "(other)"
            )
            stats.record(route, status, time.perf_counter() - started)


def _sample(proc: psutil.Process) -> tuple[float, int]:
    return proc.memory_info().rss / 2**20, proc.num_threads()


def _serve(settings: Settings, port: int, **extra_env: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("K2_")}
    env.update(
        K2_DATA_DIR=str(settings.data_dir),
        K2_KAFKA__PORT=str(settings.kafka.port),
        K2_KAFKA__CONTROLLER_PORT=str(settings.kafka.controller_port),
        K2_API__PORT=str(port),
        K2_API__API_KEYS='["' + '","'.join(KEYS) + '"]',
        K2_API__RATE_LIMIT_PER_MINUTE="100000",
        K2_API__OPS_RATE_LIMIT_PER_MINUTE="100000",
        K2_LOG__LEVEL="WARNING",
        K2_LOG__FORMAT="json",
    )
    env.update(extra_env)
    log = (settings.data_dir / "serve.log").open("wb")
    return subprocess.Popen([sys.executable, "-m", "k2.cli", "serve"], env=env, stdout=log, stderr=log)


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"k2 serve exited with {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code in (200, 503):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("k2 serve did not answer within 60 s")


Sample = tuple[float, float, int]  # seconds since the start, RSS MiB, threads


@dataclass(frozen=True)
class Steadiness:
    """RSS and threads after warm-up: the verdict of a soak on leaks."""

    warm_rss: float  # MiB, at the end of warm-up
    end_rss: float
    peak_rss: float
    slope: float  # MiB/min, least squares over the samples after warm-up
    slope_se: float  # its standard error: RSS swings by tens of MiB from one second to the next
    warm_threads: int  # the most threads seen during warm-up
    end_threads: int
    max_slope: float

    @property
    def passed(self) -> bool:
        """Growth above the bound is not shown (slope - 2 SE below it), and no thread was left behind."""
        return self.slope - 2 * self.slope_se < self.max_slope and self.end_threads <= self.warm_threads


def steadiness(
    samples: list[Sample], load_s: float, *, max_slope: float, block_s: float = 30.0
) -> Steadiness:
    """Split the samples taken under load at half time and fit RSS over the second half.

    A leak grows RSS at a steady rate forever; caches grow it until they reach their caps. Half
    the run is warm-up, so a cache that is still filling at the end shows as a slope, not a pass.
    RSS swings by tens of MiB for seconds at a time (responses built and freed), so neighbouring
    samples are not independent: the line is fitted to ``block_s`` means, whose scatter gives an
    honest standard error. Samples after the load stopped (RSS may fall then) are left out.
    """
    half = load_s / 2
    loaded = [s for s in samples if s[0] <= load_s + 1] or samples
    warm = [s for s in loaded if s[0] <= half] or loaded[:1]
    blocks: dict[int, list[Sample]] = {}
    for sample in (s for s in loaded if s[0] >= half):
        blocks.setdefault(int((sample[0] - half) // block_s), []).append(sample)
    points = [
        (sum(t for t, _, _ in b) / len(b), sum(r for _, r, _ in b) / len(b))
        for _, b in sorted(blocks.items())
    ]
    if len(points) < 3:  # too short for blocks: every sample is a point
        points = [(t, r) for t, r, _ in loaded[-max(3, len(loaded) // 2) :]]
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mr = sum(r for _, r in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    slope_s = sum((t - mt) * (r - mr) for t, r in points) / var if var else 0.0
    residual = sum((r - mr - slope_s * (t - mt)) ** 2 for t, r in points)
    se_s = (residual / (n - 2) / var) ** 0.5 if var and n > 2 else 0.0
    return Steadiness(
        warm_rss=warm[-1][1],
        end_rss=samples[-1][1],
        peak_rss=max(r for _, r, _ in samples),
        slope=slope_s * 60,
        slope_se=se_s * 60,
        warm_threads=max(n for _, _, n in warm),
        end_threads=samples[-1][2],
        max_slope=max_slope,
    )


def _every(samples: list[Sample], spacing_s: float) -> list[Sample]:
    """One sample per ``spacing_s`` (and the last), for printing."""
    shown: list[Sample] = []
    for sample in samples:
        if not shown or sample[0] - shown[-1][0] >= spacing_s or sample is samples[-1]:
            shown.append(sample)
    return shown


def _report(stats: Stats, seconds: float, samples: list[Sample], max_slope: float) -> int:
    total = sum(stats.status.values())
    print(f"\n{total} requests in {seconds:.0f} s: {total / seconds:.0f} requests/s")
    print(f"\n{'route':<26}{'count':>8}{'p50 ms':>10}{'p99 ms':>10}")
    for route in sorted(stats.latency):
        values = sorted(stats.latency[route])
        p50 = statistics.median(values) * 1000
        p99 = values[min(len(values) - 1, int(len(values) * 0.99))] * 1000
        print(f"{route:<26}{len(values):>8}{p50:>10.1f}{p99:>10.1f}")
    print("\nresponses by status: " + ", ".join(f"{k}: {v}" for k, v in sorted(stats.status.items())))
    print(
        "\nserver over time (s, RSS MiB, threads): "
        + "; ".join(f"{t:.0f}: {r:.0f}, {n}" for t, r, n in _every(samples, 30.0))
    )
    _, rss0, threads0 = samples[0]
    verdict = steadiness(samples, seconds, max_slope=max_slope)
    print(
        f"server RSS {rss0:.0f} MiB at start, {verdict.warm_rss:.0f} after warm-up (t={seconds / 2:.0f} s), "
        f"{verdict.end_rss:.0f} at end, peak {verdict.peak_rss:.0f}"
    )
    print(
        f"threads {threads0} at start, at most {verdict.warm_threads} during warm-up, {verdict.end_threads} at end"
    )
    print(
        "steady-state RSS slope (second half, least squares over 30 s means): "
        f"{verdict.slope:+.2f} ± {verdict.slope_se:.2f} MiB/min (1 SE)"
    )
    errors = sum(v for k, v in stats.status.items() if k.startswith("5") or k.startswith("client:"))
    print(f"5xx and failed requests: {errors}")
    if seconds < _MIN_JUDGED_S:
        print(
            f"RSS not judged: {seconds:.0f} s is too short to tell warm-up from a leak (>= {_MIN_JUDGED_S} s)"
        )
        return errors
    flat = "PASS" if verdict.passed else "FAIL"
    print(
        f"{flat}: RSS growth after warm-up not shown above {max_slope:g} MiB/min (slope - 2 SE < {max_slope:g}) "
        "and threads at end <= warm-up peak"
    )
    return errors + (0 if verdict.passed else 1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=600.0, help="the second half is judged")
    parser.add_argument("--quick", action="store_true", help="30 s, 6 clients")
    parser.add_argument("--sample-s", type=float, default=1.0, help="seconds between RSS samples")
    parser.add_argument(
        "--max-slope", type=float, default=1.0, help="MiB/min of RSS growth allowed after warm-up"
    )
    args = parser.parse_args(argv)
    clients, seconds = (6, 30.0) if args.quick else (max(1, min(args.clients, 64)), min(args.seconds, 1800.0))
    with kafka_broker(heap="512m") as settings:
        ensure_topics(settings.kafka)
        print("loading the ASX sample into the lake …", flush=True)
        _load_lake(settings)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = _serve(settings, port)
        try:
            _wait_ready(url, server)
            proc = psutil.Process(server.pid)
            stats = Stats()
            warm = time.monotonic() + 5  # warm caches before the first sample
            _run(url, clients, warm, Stats())
            started = time.monotonic()
            samples = [(0.0, *_sample(proc))]
            deadline = started + seconds
            threads = [threading.Thread(target=_worker, args=(url, deadline, stats, i), daemon=True)
                       for i in range(clients)]  # fmt: skip
            print(f"soaking {url} with {clients} clients for {seconds:.0f} s …", flush=True)
            for thread in threads:
                thread.start()
            while any(t.is_alive() for t in threads):
                time.sleep(min(0.5, args.sample_s / 2))
                if time.monotonic() - started - samples[-1][0] >= args.sample_s:
                    samples.append((time.monotonic() - started, *_sample(proc)))
            for thread in threads:
                thread.join(timeout=60)
            time.sleep(2)  # let hung-up streams be noticed before the last sample
            samples.append((time.monotonic() - started, *_sample(proc)))
            errors = _report(stats, deadline - started, samples, args.max_slope)
        finally:
            server.terminate()
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
                print("k2 serve ignored SIGTERM for 20 s")
    raise SystemExit(1 if errors else 0)


def _run(url: str, clients: int, deadline: float, stats: Stats) -> None:
    threads = [
        threading.Thread(target=_worker, args=(url, deadline, stats, 1000 + i)) for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)


if __name__ == "__main__":
    main()
