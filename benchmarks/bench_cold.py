"""Cold as fast as warm (issue #17 goal 2): first queries of real ``k2 serve`` processes, over HTTP.

    python -m benchmarks.bench_cold [--quick] [--starts N] [--commits N] [--reps N] [--no-baseline] [--no-kafka]

Data: the ASX sample shipped in ``data/asx-2014-03`` (200,545 trades, 169,629 quotes), appended
to K2's Iceberg tables (SQLite catalog, local warehouse, as ``k2 serve`` finds them in its data
dir) over 40 commits per table (--quick: 20), as streaming leaves them; the last session is held
back and committed while a server runs. Every figure is a client's wall time over loopback HTTP
(JSON), from ``python -m k2.cli serve`` processes the benchmark starts and stops.

* **First query after start**: ``--starts`` processes (--quick: 4). Each is started, /ready is
  polled until 200 (warm-up done; the time to ready is reported), then one request of each goal
  query is timed, in a random order per start: the 15-minute window of one symbol's trades, the
  1-minute bars of one symbol-day, and the as-of join (trades with the prevailing quote, 5 minute
  tolerance) over a 15-minute window. Symbols and windows are drawn at random from the data.
  With Kafka (unless --no-kafka: a broker is started for the run) the first half of the held-back
  session is produced to the trades and quotes topics, not committed, and the live route is timed
  too: ``/v1/trades/recent`` (hybrid: Iceberg plus the Kafka tail), the last 15 minutes of a symbol
  of the tail. The resident memory (RSS) of each server is read after its first queries.
* **Warm**: the last started server then answers ``--reps`` samples of each query (--quick: 30).
* **First query after a new snapshot**: ``--commits`` times (--quick: 6) a slice of the held-back
  session is appended (quotes, then trades); the client then asks the goal query (the three in
  turn) over the new rows until the X-K2-Snapshots header names the new snapshots, and the first
  such answer is timed. It is also checked: it must hold every committed trade of the window.
* **Baseline** (unless --no-baseline): the same start and commit figures with warm-up and prefetch
  off (``K2_API__WARMUP=false``), i.e. the engine as it was before, for the ratio it buys.

It prints each goal's p50/p99 against 30 ms and the cold/warm ratio (p99 over p99), and writes
``benchmarks/results/bench_cold.json``. The machine is shared: it reports the load average too.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.ipc
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.results import write_result
from benchmarks.services import kafka_broker, stop_process, wait_served
from k2.config import Settings
from k2.feeds import read_asx
from k2.lake.stamp import without_stamp
from k2.lake.tables import ensure_tables
from k2.services.process import free_port
from k2.stream.admin import ensure_topics
from k2.stream.producer import TickProducer

__all__ = ["main"]

ASX_DIR = Path(__file__).resolve().parents[1] / "data" / "asx-2014-03"
GOAL_MS = 30.0
QUERIES = ("window", "bars", "asof")
LIVE = "recent"  # the hybrid route, timed when a broker runs
_SYDNEY = ZoneInfo("Australia/Sydney")
_CATALOG = "bench"


@dataclass(frozen=True)
class Sample:
    query: str
    symbol: str
    start: datetime
    end: datetime

    def params(self) -> dict[str, Any]:
        span = {"symbols": self.symbol, "start": self.start.isoformat(), "end": self.end.isoformat()}
        if self.query == "window":
            return {**span, "limit": 100_000}
        if self.query == "bars":
            return {**span, "interval": "1m"}
        if self.query == LIVE:
            return {"symbol": self.symbol, "minutes": 15}
        return {**span, "tolerance": "5m"}

    @property
    def path(self) -> str:
        paths = {
            "window": "/v1/trades",
            "bars": "/v1/bars",
            "asof": "/v1/trades-with-quotes",
            LIVE: "/v1/trades/recent",
        }
        return paths[self.query]


def load_frames() -> dict[str, pl.DataFrame]:
    asx = read_asx(ASX_DIR).delivery
    return {
        kind: frame.sort("exchange_ts", maintain_order=True).with_columns(
            pl.lit(0, dtype=pl.Int32).alias("kafka_partition"),
            pl.int_range(frame.height, dtype=pl.Int64).alias("kafka_offset"),
        )
        for kind, frame in (("trades", asx.trades), ("quotes", asx.quotes))
    }


class Lake:
    """K2's tables in ``root`` (the layout ``k2 serve`` expects of its data dir)."""

    def __init__(self, root: Path) -> None:
        from pyiceberg.catalog.sql import SqlCatalog

        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        catalog = SqlCatalog(
            _CATALOG, uri=f"sqlite:///{root}/catalog.db", warehouse=f"file://{root}/warehouse"
        )
        catalog.create_namespace_if_not_exists("k2")
        self.tables = ensure_tables(catalog, "k2")

    def append(self, kind: str, frame: pl.DataFrame) -> int:
        """Append one commit (sorted as K2's writer sorts); returns the new snapshot id."""
        table = self.tables[kind]
        schema = without_stamp(table.schema().as_arrow())  # appended directly: no commit stamp
        part = frame.sort("symbol", "exchange_ts", "sequence").select(schema.names).to_arrow()
        table.append(pa.Table.from_batches(part.to_batches(), schema=part.schema).cast(schema))
        snap = table.current_snapshot()
        assert snap is not None
        return snap.snapshot_id

    def stream(self, kind: str, frame: pl.DataFrame, commits: int) -> None:
        size = -(-frame.height // commits)
        for i in range(commits):
            if frame.height > i * size:
                self.append(kind, frame.slice(i * size, size))


class Serve:
    """``python -m k2.cli serve`` over ``data_dir`` as its own process on a free loopback port."""

    def __init__(self, data_dir: Path, *, warmup: bool, kafka: str | None = None) -> None:
        self.port = free_port()
        env = {
            **({"K2_KAFKA__BOOTSTRAP_SERVERS": kafka} if kafka else {}),
            **os.environ,
            "K2_DATA_DIR": str(data_dir),
            "K2_LAKE__CATALOG_NAME": _CATALOG,
            "K2_API__PORT": str(self.port),
            "K2_API__RATE_LIMIT_PER_MINUTE": str(10**9),
            "K2_API__OPS_RATE_LIMIT_PER_MINUTE": str(10**9),
            "K2_API__MAX_ROWS": "1000000",
            "K2_API__WARMUP": "true" if warmup else "false",
        }
        self.log = (data_dir / f"serve-{self.port}.log").open("wb")
        started = time.perf_counter()
        self.process = subprocess.Popen([sys.executable, "-m", "k2.cli", "serve"], env=env,
                                        stdout=self.log, stderr=subprocess.STDOUT)  # fmt: skip
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=120)
        try:
            wait_served(str(self.client.base_url), self.process, Path(self.log.name), client=self.client,
                        timeout_s=180)  # fmt: skip
        except RuntimeError:
            self.close()
            raise
        self.ready_s = time.perf_counter() - started

    def rss_mb(self) -> float:
        """The server's resident memory now (Linux)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def timed(self, sample: Sample) -> tuple[float, httpx.Response]:
        started = time.perf_counter()
        response = self.client.get(sample.path, params=sample.params())
        response.raise_for_status()
        response.content  # noqa: B018 - the body is part of the latency
        return (time.perf_counter() - started) * 1000, response

    def close(self) -> None:
        self.client.close()
        stop_process(self.process)
        self.log.close()


@contextmanager
def serving(data_dir: Path, *, warmup: bool, kafka: str | None = None) -> Iterator[Serve]:
    server = Serve(data_dir, warmup=warmup, kafka=kafka)
    try:
        yield server
    finally:
        server.close()


def draw(trades: pl.DataFrame, query: str, rng: random.Random, tail: pl.DataFrame | None = None) -> Sample:
    """A 15-minute window around a random trade (bars: that trade's symbol-day, Sydney sessions;
    recent: the symbol of a random trade of the Kafka tail)."""
    if query == LIVE:
        assert tail is not None
        row = tail.row(rng.randrange(tail.height), named=True)
        return Sample(query, row["symbol"], row["exchange_ts"], row["exchange_ts"])
    row = trades.row(rng.randrange(trades.height), named=True)
    ts: datetime = row["exchange_ts"]
    if query == "bars":
        session: date = row["session"]
        start = datetime(session.year, session.month, session.day, tzinfo=_SYDNEY).astimezone(UTC)
        return Sample(query, row["symbol"], start, start + timedelta(days=1))
    return Sample(
        query, row["symbol"], ts - timedelta(minutes=7, seconds=30), ts + timedelta(minutes=7, seconds=30)
    )


def first_after_start(
    data_dir: Path,
    trades: pl.DataFrame,
    starts: int,
    rng: random.Random,
    *,
    warmup: bool,
    queries: tuple[str, ...],
    kafka: str | None,
    tail: pl.DataFrame | None,
) -> tuple[dict[str, list[float]], list[float], list[float], list[float]]:
    """Per query the first request's ms after each start; the very first requests; times to ready;
    the servers' RSS (MB) after their first queries."""  # fmt: skip
    firsts: dict[str, list[float]] = {q: [] for q in queries}
    very_first: list[float] = []
    ready: list[float] = []
    rss: list[float] = []
    for i in range(starts):
        with serving(data_dir, warmup=warmup, kafka=kafka) as server:
            ready.append(server.ready_s)
            order = rng.sample(queries, len(queries))
            for j, query in enumerate(order):
                ms, _ = server.timed(draw(trades, query, rng, tail))
                firsts[query].append(ms)
                if j == 0:
                    very_first.append(ms)
            rss.append(server.rss_mb())
            print(f"  start {i + 1}/{starts} ({'warm-up' if warmup else 'no warm-up'}): ready in "
                  f"{server.ready_s:.1f} s, first " + ", ".join(f"{q} {firsts[q][-1]:.1f} ms" for q in order),
                  flush=True)  # fmt: skip
    return firsts, very_first, ready, rss


def warm(server: Serve, trades: pl.DataFrame, reps: int, rng: random.Random, queries: tuple[str, ...],
         tail: pl.DataFrame | None) -> dict[str, list[float]]:  # fmt: skip
    out: dict[str, list[float]] = {q: [] for q in queries}
    for query in queries:
        for _ in range(3):  # this server's first requests of the kind are not warm figures
            server.timed(draw(trades, query, rng, tail))
        out[query] = [server.timed(draw(trades, query, rng, tail))[0] for _ in range(reps)]
    return out


_SPLIT = {
    "request": ("k2_api_request_seconds", "route", "/v1/trades-with-quotes"),
    "join": ("k2_query_seconds", "query", "asof_memory"),
    "join_duckdb": ("k2_query_seconds", "query", "asof"),
}


def _sums(server: Serve, fmt: str) -> dict[str, float]:
    """The server's cumulative seconds per part of an as-of answer, from /metrics."""
    wanted = {**_SPLIT, "encode": ("k2_encode_seconds", "format", fmt)}
    out = dict.fromkeys(wanted, 0.0)
    for family in text_string_to_metric_families(server.client.get("/metrics").text):
        for sample in family.samples:
            if not sample.name.endswith("_sum"):
                continue
            for part, (metric, label, value) in wanted.items():
                if sample.name == f"{metric}_sum" and sample.labels.get(label) == value:
                    out[part] += sample.value
    return out


def asof_day(
    server: Serve, trades: pl.DataFrame, reps: int, rng: random.Random
) -> dict[str, dict[str, list[float]]]:
    """The as-of join over a whole symbol-day (the busiest symbols), JSON and Arrow IPC, warm; per
    request where the time went: client wall time, server until headers, the join, the encoding."""
    busiest = trades.group_by("symbol", "session").len().sort("len", descending=True).head(6).rows()
    out: dict[str, dict[str, list[float]]] = {}
    for fmt in ("json", "arrow"):
        parts: dict[str, list[float]] = {k: [] for k in ("client", "server", "join", "encode", "rows", "mb")}
        for i in range(reps + 2):
            symbol, session, _ = busiest[rng.randrange(len(busiest))]
            day = datetime(session.year, session.month, session.day, tzinfo=_SYDNEY).astimezone(UTC)
            sample = Sample("asof", symbol, day, day + timedelta(days=1))
            before = _sums(server, fmt)
            started = time.perf_counter()
            response = server.client.get(sample.path, params={**sample.params(), "format": fmt})
            response.raise_for_status()
            body = response.content
            client_ms = (time.perf_counter() - started) * 1000
            after = _sums(server, fmt)
            if i < 2:  # the first of each format warms its encoder
                continue
            delta = {k: (after[k] - before[k]) * 1000 for k in after}
            parts["client"].append(client_ms)
            parts["server"].append(delta["request"])
            parts["join"].append(delta["join"] + delta["join_duckdb"])
            parts["encode"].append(delta["encode"])
            rows = response.json()["count"] if fmt == "json" else pa.ipc.open_stream(body).read_all().num_rows
            parts["rows"].append(rows)
            parts["mb"].append(len(body) / 1e6)
        out[fmt] = parts
    return out


def produce_tail(kafka: Settings, held: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """Send the held-back rows to K2's topics (never committed to the lake by this run's servers:
    the lake's snapshots carry no offsets, so the hybrid reads the topics whole); the trades sent."""
    ensure_topics(kafka.kafka)
    producer = TickProducer(kafka.kafka)
    try:
        for kind in ("quotes", "trades"):
            producer.send(kind, held[kind].drop("kafka_partition", "kafka_offset"))
        producer.flush()
    finally:
        producer.close()
    return held["trades"]


def after_commits(
    server: Serve, lake: Lake, held: dict[str, pl.DataFrame], commits: int, truth: pl.DataFrame
) -> dict[str, list[float]]:
    """Commit slices of the held-back session; time the first answer that reads each new snapshot."""
    out: dict[str, list[float]] = {q: [] for q in QUERIES}
    trades, quotes = held["trades"], held["quotes"]
    edges = np.linspace(trades["exchange_ts"].min().timestamp(), trades["exchange_ts"].max().timestamp() + 1,
                        commits + 1)  # fmt: skip
    for i in range(commits):
        lo, hi = (datetime.fromtimestamp(float(x), UTC) for x in edges[i : i + 2])
        t_part = trades.filter((pl.col("exchange_ts") >= lo) & (pl.col("exchange_ts") < hi))
        q_part = quotes.filter((pl.col("exchange_ts") >= lo) & (pl.col("exchange_ts") < hi))
        if not t_part.height:
            continue
        want = {"quotes": lake.append("quotes", q_part) if q_part.height else None}
        want["trades"] = lake.append("trades", t_part)
        query = QUERIES[i % len(QUERIES)]
        last = t_part.row(t_part.height - 1, named=True)
        end = last["exchange_ts"] + timedelta(microseconds=1)
        if query == "bars":
            session: date = last["session"]
            day = datetime(session.year, session.month, session.day, tzinfo=_SYDNEY).astimezone(UTC)
            sample = Sample(query, last["symbol"], day, day + timedelta(days=1))
        else:
            sample = Sample(query, last["symbol"], end - timedelta(minutes=15), end)
        deadline = time.monotonic() + 60
        while True:
            ms, response = server.timed(sample)
            seen = dict(p.split("=", 1) for p in response.headers["X-K2-Snapshots"].split(",") if p)
            if all(seen.get(k) == str(v) for k, v in want.items() if v is not None and k in seen):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not switch to snapshot {want} within 60 s")
            time.sleep(0.01)
        out[query].append(ms)
        if query == "window":  # exact: every committed trade of the window is in the answer
            expected = lake_count(truth, sample)
            got = response.json()["count"]
            assert got == expected, f"first answer after commit {i}: {got} trades, expected {expected}"
        print(f"  commit {i + 1}/{commits}: first {query} on the new snapshot {ms:.1f} ms", flush=True)
    return out


def lake_count(trades: pl.DataFrame, sample: Sample) -> int:
    window = trades.filter(
        (pl.col("symbol") == sample.symbol)
        & (pl.col("exchange_ts") >= sample.start)
        & (pl.col("exchange_ts") < sample.end)
    )
    return window.height


def _p(times: list[float]) -> tuple[float, float]:
    if not times:
        return float("nan"), float("nan")
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="4 starts, 6 commits, 30 warm reps")
    parser.add_argument("--starts", type=int, default=None)
    parser.add_argument("--commits", type=int, default=None)
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--no-baseline", action="store_true", help="skip the runs without warm-up")
    parser.add_argument("--no-kafka", action="store_true", help="no broker: skip the hybrid route")
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        broker = None if args.no_kafka else stack.enter_context(kafka_broker())
        run(args, broker)


def run(args: argparse.Namespace, broker: Settings | None) -> None:
    starts = args.starts or (4 if args.quick else 12)
    commits = args.commits or (6 if args.quick else 24)
    reps = args.reps or (30 if args.quick else 100)
    baseline = not args.no_baseline
    rng = random.Random(7)
    load = [os.getloadavg()[0]]
    root = Path(tempfile.mkdtemp(prefix="k2-bench-cold-"))
    try:
        frames = load_frames()
        last = frames["trades"]["session"].max()
        kept = {k: f.filter(pl.col("session") < last) for k, f in frames.items()}
        held = {k: f.filter(pl.col("session") == last) for k, f in frames.items()}
        lake = Lake(root)
        streamed = 20 if args.quick else 40
        for kind in ("trades", "quotes"):
            lake.stream(kind, kept[kind], streamed)
        print(f"lake: {kept['trades'].height:,} trades and {kept['quotes'].height:,} quotes in {streamed} "
              f"commits each; {held['trades'].height:,} trades of {last} held back", flush=True)  # fmt: skip
        trades = kept["trades"]
        tail = produce_tail(broker, _slice(held, first_half=True)) if broker is not None else None
        kafka = broker.kafka.bootstrap if broker is not None else None
        queries = QUERIES + ((LIVE,) if broker is not None else ())
        if tail is not None:
            print(
                f"kafka: {tail.height:,} trades of {last} produced, not committed (the live tail)", flush=True
            )
        figures: dict[str, float] = {}
        runs = [("warm-up", True)] + ([("baseline", False)] if baseline else [])
        table: dict[tuple[str, str], list[float]] = {}
        split: dict[str, dict[str, list[float]]] = {}
        for label, on in runs:
            firsts, very_first, ready, rss = first_after_start(
                root, trades, starts if on else max(starts // 2, 2), rng, warmup=on, queries=queries,
                kafka=kafka, tail=tail,
            )  # fmt: skip
            table[(label, "ready_s")] = ready
            table[(label, "rss_mb")] = rss
            table[(label, "first")] = very_first
            for q in queries:
                table[(label, f"start_{q}")] = firsts[q]
            with serving(root, warmup=on, kafka=kafka) as server:
                if on:
                    for q, times in warm(server, trades, reps, rng, queries, tail).items():
                        table[("warm", q)] = times
                    split = asof_day(server, trades, max(reps // 3, 10), rng)
                n = commits if on else max(commits // 2, 3)
                part = _slice(held, first_half=on)
                for q, times in after_commits(server, lake, part, n, frames["trades"]).items():
                    table[(label, f"commit_{q}")] = times
        load.append(os.getloadavg()[0])
        figures.update(report(table, load))
        figures.update(report_split(split))
        figures.update(
            {"starts": starts, "commits": commits, "reps": reps, "load_start": load[0], "load_end": load[-1]}
        )
        write_result("bench_cold", figures, quick=args.quick,
                     notes=f"1-minute load average {load[0]:.1f} at start, {load[-1]:.1f} at end")  # fmt: skip
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _slice(held: dict[str, pl.DataFrame], *, first_half: bool) -> dict[str, pl.DataFrame]:
    """The held-back session for one run: the first half of its hours (warm-up run), or the rest."""
    times = held["trades"]["exchange_ts"]
    middle = times.min() + (times.max() - times.min()) / 2
    keep = (pl.col("exchange_ts") < middle) if first_half else (pl.col("exchange_ts") >= middle)
    return {k: f.filter(keep) for k, f in held.items()}


def report(table: dict[tuple[str, str], list[float]], load: list[float]) -> dict[str, float]:
    """Print the goal table and return the flat figures (ms; times to ready in s)."""
    out: dict[str, float] = {}
    for (label, name), times in table.items():
        p50, p99 = _p(times)
        key = f"{label.replace('-', '')}_{name}"
        out[f"{key}_p50"], out[f"{key}_p99"] = p50, p99
    warm99 = {q: _p(times)[1] for (label, q), times in table.items() if label == "warm"}
    print(
        f"\nms over HTTP (JSON): goal p99 <= {GOAL_MS:.0f} ms; 1-min load average {load[0]:.1f} -> {load[-1]:.1f}"
    )
    print(f"{'run':<9} {'figure':<34} {'n':>3} {'p50':>7} {'p99':>7}  {'goal':<6} {'p99/warm p99':>12}")
    for (label, name), times in table.items():
        if name in ("ready_s", "rss_mb"):
            continue
        p50, p99 = _p(times)
        query = name.split("_")[-1]
        ratio = f"{p99 / warm99[query]:>12.2f}" if query in warm99 and label != "warm" else ""
        goal = "met" if p99 <= GOAL_MS else "MISSED"
        print(f"{label:<9} {_title(name):<34} {len(times):>3} {p50:>7.1f} {p99:>7.1f}  {goal:<6} {ratio}")
    for label in dict.fromkeys(k[0] for k in table if k[1] == "ready_s"):
        ready = table[(label, "ready_s")]
        print(f"{label}: process start to /ready 200: p50 {_p(ready)[0]:.1f} s, max {max(ready):.1f} s")
        rss = table[(label, "rss_mb")]
        print(
            f"{label}: RSS of k2 serve after its first queries: p50 {_p(rss)[0]:.0f} MB, max {max(rss):.0f} MB"
        )
    return out


def report_split(split: dict[str, dict[str, list[float]]]) -> dict[str, float]:
    """Print where a symbol-day as-of join's time goes, per format (medians and p99, ms)."""
    out: dict[str, float] = {}
    print("\nas-of join over a symbol-day (warm), ms: client = wall time over HTTP; server = until the "
          "response headers;\n  join = the join itself (k2_query_seconds); encode = k2_encode_seconds; "
          "the rest of server: scans, hot rows, routing")  # fmt: skip
    print(f"{'format':<7} {'n':>3} {'rows p50':>9} {'MB p50':>7}   {'part':<7} {'p50':>7} {'p99':>7}")
    for fmt, parts in split.items():
        n, rows, mb = len(parts["client"]), _p(parts["rows"])[0], _p(parts["mb"])[0]
        for part in ("client", "server", "join", "encode"):
            p50, p99 = _p(parts[part])
            out[f"asof_day_{fmt}_{part}_p50"], out[f"asof_day_{fmt}_{part}_p99"] = p50, p99
            lead = f"{fmt:<7} {n:>3} {rows:>9.0f} {mb:>7.2f}" if part == "client" else " " * 29
            goal = ("  met" if p99 <= GOAL_MS else "  MISSED") if part == "client" else ""
            print(f"{lead}   {part:<7} {p50:>7.1f} {p99:>7.1f}{goal}")
    return out


def _title(name: str) -> str:
    if name == "first":
        return "first query after start (any)"
    if name in (*QUERIES, LIVE):
        return f"warm {name}"
    phase, query = name.split("_")
    return f"first {query} after {'start' if phase == 'start' else 'a commit'}"


if __name__ == "__main__":
    main()
