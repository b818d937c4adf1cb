"""Growth (issue #17 goal 4): query p99 and ``k2 serve``'s memory as one trades table grows 10x.

    python -m benchmarks.bench_growth [--quick] [--sizes 10M,50M,100M] [--samples 100] [--rounds 3]

One table, grown in steps within one run, so the ratios compare figures of the same run:

* **Data**: 100 simulated symbols (exchange SIM, UTC sessions 10:00-16:00 on weekdays from
  2024-01-02), ``--rows-per-day`` trades a day (400,000: 10 M is 25 trading days, 50 M 125 and
  100 M 250), so the table grows as a lake does, by accumulating days of history; each
  symbol-day keeps the same density at every size. The trades come from :func:`simulate_day`, a
  vectorised generator (numpy + polars): per symbol a multinomial share of the day's trades, uniform
  times within the session, a Gaussian random walk of the log price carried over from day to day,
  per-symbol sequence numbers, random message ids. ``k2.feeds``' simulator is not used: it makes
  ~56 K trades/s here, half an hour for 100 M.
* **Writes**: K2's own commit path, ``k2.lake.writer.TableWriter`` with the pipeline's sort
  (symbol, exchange_ts, sequence) and Kafka offsets (one synthetic partition), in exchange-time
  order, onto the tables ``k2.lake.tables.ensure_tables`` creates (day x bucket(8) of symbol
  partitions), in commits of ``--commit-rows``: by default one trading day per commit, so each
  partition lands as the one sorted file compaction would leave (streaming's small commits, e.g.
  ``--commit-rows 200000`` = ``lake.commit_rows``, reach the same layout after compaction, at twice
  the write time: too slow on a shared 2-core VM for 100 M).
* **Maintenance** before every measurement: ``k2.lake.maintenance.compact`` over the whole table
  (what ``k2 lake compact`` does, and what ``k2 ingest``'s upkeep reaches once a day's partitions
  go cold: one file per partition), then one ``k2.pipeline.upkeep.Upkeep`` pass with the default
  lake settings (properties, retention, manifest merge, orphan files), as ``k2 ingest`` runs it.
* **Queries** at every size: a fresh ``k2 serve`` (its own process, default settings) is started on
  the lake and polled on /ready (its own warm-up); in this process, the engine ``k2 serve`` builds
  (``QueryEngine.from_settings``, default settings) is warmed by the server's ``Warmer``. Both then answer one untimed round of samples
  (a user's first queries), then ``--rounds`` timed rounds of ``--samples`` new random samples
  each (engine and HTTP take turns per round): (a) the 15-minute window of one symbol's trades (``/v1/trades``, JSON), (b) the 1-minute
  bars of one symbol-day (``/v1/bars``, JSON); symbols, days and window starts are drawn at random
  over every day in the table at that size.

It prints p50/p99 per size, query and path (engine, HTTP), the ratio p99(largest)/p99(smallest)
against the goal (<= 1.5), the server's RSS after the queries (psutil) and the table's bytes on
disk, and writes ``benchmarks/results/bench_growth.json``. ``--quick``: 1 M and 2 M trades
(50,000 a day), 30 samples, 2 rounds: a smoke test, not the goal's measure (1 M fits the engine's
hot-row cache of 2 M rows, 2 M does not, so its ratio measures the cache's edge). ``--profile DIR``: py-spy records the server during the
timed rounds at each size (flame graphs in DIR).
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from benchmarks.results import write_result

__all__ = ["GrowthState", "main", "parse_size", "simulate_day", "trading_days"]

SYMBOLS = 100
SEED = 17
SESSION_OPEN = timedelta(hours=10)
SESSION_LENGTH = timedelta(hours=6)
FIRST_DAY = date(2024, 1, 2)
GOAL_RATIO = 1.5
_NS = "k2"
_US_PER_DAY = 86_400_000_000
_EPOCH = date(1970, 1, 1)


def parse_size(text: str) -> int:
    """``10M`` -> 10_000_000, ``500K`` -> 500_000, ``1234`` -> 1234."""
    text = text.strip().upper().replace("_", "")
    scale = {"K": 1_000, "M": 1_000_000, "G": 1_000_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if scale > 1 else text) * scale)


def trading_days(first: date = FIRST_DAY) -> Iterator[date]:
    """Weekdays from ``first`` on (no holidays)."""
    day = first
    while True:
        if day.weekday() < 5:
            yield day
        day += timedelta(days=1)


@dataclass
class GrowthState:
    """What carries from one simulated day to the next: prices, sequences, Kafka offsets."""

    symbols: list[str]
    seed: int = SEED
    weights: np.ndarray = field(init=False)
    last_price: np.ndarray = field(init=False)
    sequence: np.ndarray = field(init=False)
    offset: int = 0

    def __post_init__(self) -> None:
        rng = np.random.default_rng([self.seed, 0])
        activity = rng.lognormal(0.0, 0.6, len(self.symbols))
        self.weights = activity / activity.sum()
        self.last_price = rng.uniform(5.0, 200.0, len(self.symbols))
        self.sequence = np.zeros(len(self.symbols), dtype=np.int64)


def simulate_day(state: GrowthState, day_index: int, session: date, rows: int) -> pl.DataFrame:
    """One session's ``rows`` trades over ``state.symbols``, in exchange-time order (K2's trades schema
    plus ``kafka_partition``/``kafka_offset``). Deterministic in (state.seed, day_index) and the state."""
    rng = np.random.default_rng([state.seed, 1, day_index])
    count = len(state.symbols)
    per_symbol = rng.multinomial(rows, state.weights)
    sym = np.repeat(np.arange(count, dtype=np.int32), per_symbol)
    open_us = (session - _EPOCH).days * _US_PER_DAY + int(SESSION_OPEN.total_seconds() * 1e6)
    length_us = int(SESSION_LENGTH.total_seconds() * 1e6)
    ts = open_us + rng.integers(0, length_us, rows, dtype=np.int64)
    order = np.lexsort((ts, sym))  # per symbol, in time
    ts = ts[order]
    starts = np.concatenate(([0], np.cumsum(per_symbol)[:-1]))
    rank = np.arange(rows, dtype=np.int64) - np.repeat(starts, per_symbol)  # 0.. within each symbol
    # log-price random walk per symbol, continuing from yesterday's close
    steps = rng.normal(0.0, 0.0004, rows)
    walk = np.cumsum(steps)
    before = np.concatenate(([0.0], walk))[starts]  # the walk just before each symbol's first trade
    log_price = np.log(state.last_price)[sym] + walk - np.repeat(before, per_symbol)
    price = np.maximum(np.round(np.exp(log_price), 2), 0.01)
    ends = starts + per_symbol - 1
    traded = per_symbol > 0
    state.last_price[traded] = price[ends[traded]]
    sequence = state.sequence[sym] + rank + 1
    state.sequence += per_symbol
    size = (rng.geometric(0.02, rows) * (1 + 99 * (rng.random(rows) < 0.1))).astype(np.int64)
    names = np.asarray(state.symbols, dtype=object)
    frame = pl.DataFrame({
        "message_id": rng.integers(0, 2**63 - 1, rows, dtype=np.int64),
        "symbol": pl.Series(names[sym], dtype=pl.String),
        "sequence": sequence,
        "exchange_ts": ts,
        "latency": rng.integers(200, 20_000, rows, dtype=np.int64),
        "price": price,
        "size": size,
        "rank": rank,
    })  # fmt: skip
    stamp = session.strftime("%Y%m%d")
    frame = frame.select(
        pl.format("{}", pl.col("message_id")).alias("message_id"),
        pl.lit("SIM").alias("exchange"),
        "symbol",
        pl.lit(session).alias("session"),
        "sequence",
        pl.col("exchange_ts").cast(pl.Datetime("us", "UTC")),
        (pl.col("exchange_ts") + pl.col("latency")).cast(pl.Datetime("us", "UTC")).alias("ingest_ts"),
        pl.col("price").cast(pl.Decimal(18, 6)),
        pl.col("size").cast(pl.Decimal(18, 6)),
        pl.concat_str([pl.col("symbol"), pl.lit(f"-{stamp}-"), pl.col("rank")]).alias("trade_id"),
        pl.lit(None, dtype=pl.String).alias("qualifiers"),
        pl.lit(None, dtype=pl.String).alias("venue"),
    ).sort("exchange_ts", "symbol", "sequence")
    frame = frame.with_columns(
        pl.lit(0, dtype=pl.Int32).alias("kafka_partition"),
        pl.int_range(state.offset, state.offset + rows, dtype=pl.Int64).alias("kafka_offset"),
    )
    state.offset += rows
    return frame


# ---------------------------------------------------------------------------------------------- lake


class GrowingLake:
    """K2's tables in ``root`` (the layout ``k2 serve`` expects of its data dir), grown by commits
    through K2's ``TableWriter``."""

    TOPIC = "k2.trades"

    def __init__(self, root: Path, rows_per_day: int) -> None:
        from pyiceberg.catalog.sql import SqlCatalog

        from k2.feeds import symbol_names
        from k2.lake.tables import ensure_tables
        from k2.lake.writer import TableWriter

        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.catalog = SqlCatalog(
            "bench", uri=f"sqlite:///{root}/catalog.db", warehouse=f"file://{root}/warehouse"
        )
        self.catalog.create_namespace_if_not_exists(_NS)
        ensure_tables(self.catalog, _NS)
        self.writer = TableWriter(
            self.catalog, f"{_NS}.trades", sort_by=("symbol", "exchange_ts", "sequence")
        )
        from k2.lake.stamp import without_stamp

        self.schema = without_stamp(self.writer.table.schema().as_arrow())
        self.state = GrowthState(list(symbol_names(SYMBOLS, SEED)))
        self.rows_per_day = rows_per_day
        self.days: list[date] = []
        self._calendar = trading_days()
        self.rows = 0
        self.commits = 0

    def grow_to(self, target: int, commit_rows: int) -> tuple[float, float]:
        """Append whole days until ``target`` rows; (seconds generating, seconds committing)."""
        gen_s = commit_s = 0.0
        while self.rows < target:
            began = time.perf_counter()
            rows = min(self.rows_per_day, target - self.rows)
            session = next(self._calendar)
            frame = simulate_day(self.state, len(self.days), session, rows)
            gen_s += time.perf_counter() - began
            began = time.perf_counter()
            for lo in range(0, frame.height, commit_rows):
                part = frame.slice(lo, commit_rows)
                first, last = part["kafka_offset"][0], part["kafka_offset"][-1]
                arrow = part.select(self.schema.names).to_arrow()
                arrow = pa.Table.from_batches(arrow.to_batches(), schema=arrow.schema).cast(self.schema)
                tp = (self.TOPIC, 0)
                self.writer.commit(arrow, {tp: first} if first else {}, {tp: last + 1})
                self.commits += 1
            commit_s += time.perf_counter() - began
            self.days.append(session)
            self.rows += frame.height
            if len(self.days) % 25 == 0:
                print(f"  {self.rows:,} trades, {len(self.days)} days, {self.commits} commits "
                      f"(generate {gen_s:.0f} s, commit {commit_s:.0f} s)", flush=True)  # fmt: skip
        return gen_s, commit_s

    def maintain(self) -> str:
        """Full compaction, then one upkeep pass as ``k2 ingest`` runs it."""
        from k2.config import LakeSettings
        from k2.lake import maintenance as mx
        from k2.pipeline.upkeep import Upkeep

        table = self.writer.table.refresh()
        began = time.perf_counter()
        done = mx.compact(table)
        compact_s = time.perf_counter() - began
        began = time.perf_counter()
        Upkeep(LakeSettings(), [table.refresh()]).run()
        table = table.refresh()
        files = table.inspect.files()
        return (f"compacted {done.files_before} files -> {done.files_after} in {compact_s:.0f} s; upkeep pass "
                f"{time.perf_counter() - began:.1f} s; now {files.num_rows} files, "
                f"{len(table.snapshots())} snapshots")  # fmt: skip

    def bytes_on_disk(self) -> int:
        return sum(f.stat().st_size for f in (self.root / "warehouse").rglob("*") if f.is_file())


# ------------------------------------------------------------------------------------------- queries


@dataclass(frozen=True)
class Sample:
    symbol: str
    start: datetime
    end: datetime


def draw(lake: GrowingLake, count: int, rng: random.Random) -> dict[str, list[Sample]]:
    """``count`` random 15-minute windows and symbol-days over every day in the lake."""
    out: dict[str, list[Sample]] = {"window": [], "bars": []}
    session_s = int(SESSION_LENGTH.total_seconds())
    for _ in range(count):
        day = rng.choice(lake.days)
        midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
        start = midnight + SESSION_OPEN + timedelta(seconds=rng.randrange(session_s - 900))
        out["window"].append(Sample(rng.choice(lake.state.symbols), start, start + timedelta(minutes=15)))
        day = rng.choice(lake.days)
        midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
        out["bars"].append(Sample(rng.choice(lake.state.symbols), midnight, midnight + timedelta(days=1)))
    return out


def engine_queries(engine: Any) -> dict[str, Callable[[Sample], Any]]:
    from k2.query.params import TimeRange

    return {
        "window": lambda s: engine.ticks("trades", (s.symbol,), TimeRange(s.start, s.end), limit=100_000),
        "bars": lambda s: engine.bars((s.symbol,), TimeRange(s.start, s.end), 60_000_000),
    }


def http_queries(client: Any) -> dict[str, Callable[[Sample], Any]]:
    def get(path: str, s: Sample, **extra: Any) -> None:
        response = client.get(path, params={"symbols": s.symbol, "start": s.start.isoformat(),
                                            "end": s.end.isoformat(), "format": "json", **extra})  # fmt: skip
        response.raise_for_status()
        response.content  # noqa: B018 - the body is part of the latency

    return {
        "window": lambda s: get("/v1/trades", s, limit=100_000),
        "bars": lambda s: get("/v1/bars", s, interval="1m"),
    }


def run_rounds(
    paths: dict[str, dict[str, Callable[[Sample], Any]]], rounds: list[dict[str, list[Sample]]]
) -> dict[tuple[str, str], list[float]]:
    """Time every sample of every round; (path, query) -> ms. Paths take turns per round."""
    times: dict[tuple[str, str], list[float]] = {}
    for samples in rounds:
        for path, queries in paths.items():
            for query, fn in queries.items():
                sink = times.setdefault((path, query), [])
                for s in samples[query]:
                    began = time.perf_counter()
                    fn(s)
                    sink.append((time.perf_counter() - began) * 1000)
    return times


class Server:
    """``python -m k2.cli serve`` on the lake (default settings), its own process on a free port."""

    def __init__(self, data_dir: Path) -> None:
        import httpx

        from benchmarks.services import wait_served
        from k2.services.process import free_port

        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("K2_")}
        env.update({"K2_DATA_DIR": str(data_dir), "K2_LAKE__CATALOG_NAME": "bench", "K2_API__PORT": str(self.port),
                    "K2_API__RATE_LIMIT_PER_MINUTE": str(10**9), "K2_LOG__LEVEL": "WARNING"})  # fmt: skip
        self.log_path = data_dir / f"serve-{self.port}.log"
        self._log = self.log_path.open("wb")
        began = time.perf_counter()
        self.process = subprocess.Popen([sys.executable, "-m", "k2.cli", "serve"], env=env,
                                        stdout=self._log, stderr=subprocess.STDOUT)  # fmt: skip
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=120)
        wait_served(str(self.client.base_url), self.process, self.log_path, path="/ready", client=self.client)
        self.ready_s = time.perf_counter() - began

    def rss_mb(self) -> float:
        import psutil

        return float(psutil.Process(self.process.pid).memory_info().rss) / 2**20

    def close(self) -> None:
        from benchmarks.services import stop_process

        self.client.close()
        stop_process(self.process)
        self._log.close()


def _p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def measure_size(
    lake: GrowingLake, samples: int, rounds: int, rng: random.Random, profile: Path | None
) -> dict[str, float]:
    from k2.config import load_settings
    from k2.query.engine import QueryEngine
    from k2.query.warmup import Warmer

    draws = [draw(lake, samples, rng) for _ in range(rounds + 1)]
    server = Server(lake.root)
    figures: dict[str, float] = {"ready_s": server.ready_s}
    try:
        # the engine `k2 serve` builds (same settings, caches, DuckDB runner), warmed by its Warmer
        settings = load_settings(data_dir=lake.root, lake={"catalog_name": "bench"})
        began = time.perf_counter()
        engine = QueryEngine.from_settings(settings, catalog=lake.catalog)
        warmer = Warmer(lambda: engine, warm_rows=settings.api.warm_rows)
        warmer.start()
        if not warmer.wait(600):
            raise RuntimeError(f"the in-process engine did not warm up: {warmer.error}")
        figures["engine_warm_s"] = time.perf_counter() - began
        paths = {"engine": engine_queries(engine), "http": http_queries(server.client)}
        run_rounds(paths, draws[:1])  # a user's first queries: untimed
        spy = None
        if profile is not None:
            spy = subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(server.process.pid),
                 "-o", str(profile / f"serve-{lake.rows}.svg"), "-r", "100", "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            )  # fmt: skip
        times = run_rounds(paths, draws[1:])
        if spy is not None:
            spy.send_signal(2)
            spy.wait(60)
        figures["rss_mb"] = server.rss_mb()
        for (path, query), values in times.items():
            figures[f"{path}_{query}_p50_ms"] = _p(values, 50)
            figures[f"{path}_{query}_p99_ms"] = _p(values, 99)
        warmer.stop()
        engine.close()
    finally:
        server.close()
    figures["disk_mb"] = lake.bytes_on_disk() / 2**20
    figures["days"] = len(lake.days)
    figures["rows"] = lake.rows
    return figures


def report(results: dict[int, dict[str, float]]) -> dict[str, float]:
    sizes = sorted(results)
    print("\ngrowth: one trades table, 100 symbols; latency in ms over the timed samples")
    head = f"{'trades':>12} {'days':>5} {'disk MB':>8} {'ready s':>7} {'RSS MB':>7}"
    cols = [(p, q) for p in ("engine", "http") for q in ("window", "bars")]
    print(head + "".join(f" {p + ' ' + q + ' p50/p99':>24}" for p, q in cols))
    for size in sizes:
        f = results[size]
        line = f"{f['rows']:>12,.0f} {f['days']:>5.0f} {f['disk_mb']:>8.0f} {f['ready_s']:>7.1f} {f['rss_mb']:>7.0f}"
        line += "".join(f" {f[f'{p}_{q}_p50_ms']:>11.2f} / {f[f'{p}_{q}_p99_ms']:>10.2f}" for p, q in cols)
        print(line)
    small, large = results[sizes[0]], results[sizes[-1]]
    ratios: dict[str, float] = {}
    label = f"{large['rows'] / 1e6:g}M/{small['rows'] / 1e6:g}M"
    print(f"\np99 ratio {label} (goal <= {GOAL_RATIO}):")
    for p, q in cols:
        ratio = large[f"{p}_{q}_p99_ms"] / small[f"{p}_{q}_p99_ms"]
        ratios[f"ratio_{p}_{q}_p99"] = ratio
        p50 = large[f"{p}_{q}_p50_ms"] / small[f"{p}_{q}_p50_ms"]
        print(
            f"  {p:<6} {q:<6} p99 {ratio:5.2f}  {'ok' if ratio <= GOAL_RATIO else 'MISSED'}   (p50 {p50:.2f})"
        )
    rss = large["rss_mb"] / small["rss_mb"]
    ratios["ratio_rss"] = rss
    print(
        f"  k2 serve RSS after the queries: {small['rss_mb']:.0f} MB -> {large['rss_mb']:.0f} MB ({rss:.2f}x "
        f"for {large['rows'] / small['rows']:.0f}x the rows, {large['disk_mb'] / small['disk_mb']:.1f}x the bytes)"
    )
    return ratios


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="1M,2M trades, 50,000 a day, fewer samples")
    parser.add_argument("--sizes", default=None, help="Table sizes to measure at, e.g. 10M,50M,100M")
    parser.add_argument("--rows-per-day", type=int, default=None)
    parser.add_argument("--samples", type=int, default=None, help="Samples per query per round")
    parser.add_argument("--rounds", type=int, default=None, help="Timed rounds (after one untimed round)")
    parser.add_argument("--commit-rows", type=int, default=None, help="Rows per commit (lake.commit_rows)")
    parser.add_argument("--profile", default=None, help="py-spy the server's timed rounds; flame graphs here")
    parser.add_argument("--dir", default=None, help="Build the lake here (kept), not in a temp dir")
    args = parser.parse_args(argv)
    from k2.config import load_settings
    from k2.observability.logging import configure_logging

    configure_logging(load_settings(log={"level": "WARNING"}).log)  # the warm-up's and upkeep's logs
    sizes = [parse_size(s) for s in (args.sizes or ("1M,2M" if args.quick else "10M,50M,100M")).split(",")]
    rows_per_day = args.rows_per_day or (50_000 if args.quick else 400_000)
    samples = args.samples or (30 if args.quick else 100)
    rounds = args.rounds or (2 if args.quick else 3)
    commit_rows = args.commit_rows or rows_per_day
    profile = Path(args.profile).resolve() if args.profile else None
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
    root = Path(args.dir).resolve() if args.dir else Path(tempfile.mkdtemp(prefix="k2-bench-growth-"))
    rng = random.Random(SEED)
    load = os.getloadavg()
    print(f"sizes {sizes}, {rows_per_day:,} trades a day over {SYMBOLS} symbols, commits of {commit_rows:,}; "
          f"{samples} samples x {rounds} rounds per query; lake in {root}; load {load[0]:.2f}", flush=True)  # fmt: skip
    results: dict[int, dict[str, float]] = {}
    try:
        lake = GrowingLake(root / "lake", rows_per_day)
        for size in sizes:
            print(f"growing to {size:,} trades ...", flush=True)
            gen_s, commit_s = lake.grow_to(size, commit_rows)
            print(f"  {lake.rows:,} trades over {len(lake.days)} days in {lake.commits} commits so far; this step: "
                  f"generate {gen_s:.0f} s, commit {commit_s:.0f} s", flush=True)  # fmt: skip
            print(f"  {lake.maintain()}", flush=True)
            figures = measure_size(lake, samples, rounds, rng, profile)
            figures["load"] = os.getloadavg()[0]
            results[size] = figures
            print(f"  at {size:,}: ready {figures['ready_s']:.1f} s, RSS {figures['rss_mb']:.0f} MB, disk "
                  f"{figures['disk_mb']:.0f} MB, load {figures['load']:.2f}; p99 window engine/http "
                  f"{figures['engine_window_p99_ms']:.1f}/{figures['http_window_p99_ms']:.1f} ms, bars "
                  f"{figures['engine_bars_p99_ms']:.1f}/{figures['http_bars_p99_ms']:.1f} ms", flush=True)  # fmt: skip
        ratios = report(results)
        flat: dict[str, float] = dict(ratios)
        for size, figures in results.items():
            flat.update({f"m{size // 1_000_000 or size}_{k}": v for k, v in figures.items()})
        write_result("bench_growth", flat, quick=args.quick,
                     notes=f"{rows_per_day} trades/day, {SYMBOLS} symbols, commits of {commit_rows}, "
                           f"{samples}x{rounds} samples; load at start {load[0]:.2f}")  # fmt: skip
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
