"""Query latency on a streaming-shaped lake and after compaction, against ArcticDB in the same run.

    python -m benchmarks.bench_query [--quick] [--commits N] [--symbols N] [--reps N] [--lake DIR]

Data: the real ASX sample (4 symbols, 5 days) plus one simulated day (k2.feeds.simulator, exchange
SIM, 100 symbols: ~1.8 M trades and ~2.7 M quotes; --quick: 20 symbols). Both tables are appended
in exchange-time order over ``--commits`` small commits (1,000; --quick 200), each sorted by
(symbol, exchange_ts, sequence) as K2's writer does, every snapshot kept, as streaming leaves them;
then compacted with k2.lake.maintenance.compact. ``--lake DIR`` keeps the streamed lake in DIR and
reuses it in later runs (the compaction is undone by moving the tables back to their last
streamed snapshot).

Queries, each on random symbols / windows drawn from the data, per dataset (ASX, SIM), timed over
two passes of the same samples: cold (the first pass: files and partitions the caches have not
seen) and warm (the second: a running service's steady state):
  (a) one symbol, a 15-minute window of trades (all columns)
  (b) 1-minute OHLCV + VWAP bars for one symbol-day
  (c) as-of join (trades with the prevailing quote) for one symbol-day
  (d) (a)-(c) through the HTTP API (uvicorn on a free port, JSON)
ArcticDB (LMDB in a temp dir) holds the same trades, one ArcticDB symbol per ticker, and answers
(a) with a date_range read and (b) with its QueryBuilder resample, timed the same way.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

from benchmarks.results import write_result
from k2.feeds import MarketConfig, Simulator, SimulatorConfig, read_asx, symbol_names
from k2.lake.maintenance import compact
from k2.lake.stamp import STAMP_COLUMN, add_stamp, has_stamp, next_stamp, stamping
from k2.lake.tables import ensure_tables
from k2.query.engine import QueryEngine
from k2.query.params import TimeRange
from k2.query.reader import QueryLimits
from k2.services.process import free_port as _free_port

__all__ = ["main"]

ASX_DIR = Path(__file__).resolve().parents[1] / "data" / "asx-2014-03"
TARGETS_MS = {"a": 30.0, "b": 50.0}
_ZONES = {"ASX": ZoneInfo("Australia/Sydney"), "SIM": ZoneInfo("UTC")}


@dataclass
class Sample:
    dataset: str
    symbol: str
    window: TimeRange


def load_data(symbols: int) -> dict[str, pl.DataFrame]:
    """ASX + one simulated day, per kind, in exchange-time order, with synthetic Kafka lineage."""
    asx = read_asx(ASX_DIR).delivery
    sim = Simulator(SimulatorConfig(MarketConfig(symbols=symbol_names(symbols, 11)), seed=11))
    parts: dict[str, list[pl.DataFrame]] = {"trades": [asx.trades], "quotes": [asx.quotes]}
    for delivery in sim.deliveries(seconds=6 * 3600):
        parts["trades"].append(delivery.trades)
        parts["quotes"].append(delivery.quotes)
    out = {}
    for kind, frames in parts.items():
        frame = pl.concat(frames).sort("exchange_ts", maintain_order=True)
        out[kind] = frame.with_columns(
            pl.lit(0, dtype=pl.Int32).alias("kafka_partition"),
            pl.int_range(frame.height, dtype=pl.Int64).alias("kafka_offset"),
        )
    return out


def append_stamped(table: Any, frame: pl.DataFrame) -> None:
    """Append ``frame`` (the table's columns but the stamp) as one commit, stamped as K2's writer does.

    Every row K2 writes carries its commit's stamp (k2.lake.stamp) and time travel reads it; a
    table created before stamps existed is appended to as it is.
    """
    schema = table.schema().as_arrow()
    if not has_stamp(table):
        table.append(frame.select(schema.names).to_arrow().cast(schema))
        return
    rows = frame.select([n for n in schema.names if n != STAMP_COLUMN]).to_arrow()
    stamp = next_stamp(table)
    with stamping(stamp):
        table.append(add_stamp(rows, stamp).select(schema.names).cast(schema))


def stream_in(table: Any, frame: pl.DataFrame, commits: int, label: str) -> float:
    """Append ``frame`` in ``commits`` time-ordered slices, each stamped; returns seconds taken."""
    size = -(-frame.height // commits)
    started = time.perf_counter()
    for i in range(commits):
        part = frame.slice(i * size, size).sort("symbol", "exchange_ts", "sequence")
        if part.height:
            append_stamped(table, part)
        if (i + 1) % max(commits // 5, 1) == 0:
            print(f"  {label}: {i + 1}/{commits} commits, {time.perf_counter() - started:.0f} s", flush=True)
    return time.perf_counter() - started


def open_lake(path: Path, data: dict[str, pl.DataFrame], commits: int) -> dict[str, Any]:
    """The streamed tables in ``path``: built once, or reopened and moved back to their streamed tail."""
    import json

    from pyiceberg.catalog.sql import SqlCatalog

    path.mkdir(parents=True, exist_ok=True)
    marker = path / "streamed.json"
    catalog = SqlCatalog("bench", uri=f"sqlite:///{path}/catalog.db", warehouse=f"file://{path}/warehouse")
    catalog.create_namespace_if_not_exists("k2")
    tables = ensure_tables(catalog, "k2")
    if marker.exists():
        tails = json.loads(marker.read_text())
        for kind, snapshot_id in tails.items():
            table = tables[kind].refresh()
            if table.current_snapshot() and table.current_snapshot().snapshot_id != snapshot_id:
                table.manage_snapshots().set_current_snapshot(snapshot_id).commit()
            tables[kind] = table.refresh()
        print(f"  reusing the streamed lake in {path}", flush=True)
        return tables
    tails = {}
    for kind in ("trades", "quotes"):
        seconds = stream_in(tables[kind], data[kind], commits, kind)
        tables[kind] = tables[kind].refresh()
        tails[kind] = tables[kind].current_snapshot().snapshot_id
        print(f"  {kind}: {commits} commits in {seconds:.0f} s", flush=True)
    marker.write_text(json.dumps(tails))
    return tables


def day_window(dataset: str, session: date) -> TimeRange:
    zone = _ZONES[dataset]
    start = datetime(session.year, session.month, session.day, tzinfo=zone).astimezone(UTC)
    end = (datetime(session.year, session.month, session.day, tzinfo=zone) + timedelta(days=1)).astimezone(
        UTC
    )
    return TimeRange(start, end)


def draw_samples(trades: pl.DataFrame, count: int, seed: int) -> dict[str, dict[str, list[Sample]]]:
    """Per dataset: 15-minute windows around random trades, and random (symbol, session) days."""
    rng = random.Random(seed)
    out: dict[str, dict[str, list[Sample]]] = {}
    for dataset in ("ASX", "SIM"):
        rows = trades.filter(pl.col("exchange") == dataset).select("symbol", "session", "exchange_ts")
        picks = rows.sample(count, seed=seed, with_replacement=True).to_dicts()
        windows = [
            Sample(dataset, r["symbol"], TimeRange(r["exchange_ts"] - timedelta(minutes=7, seconds=30),
                                                    r["exchange_ts"] + timedelta(minutes=7, seconds=30)))
            for r in picks
        ]  # fmt: skip
        days = rows.select("symbol", "session").unique().sort("symbol", "session").to_dicts()
        if dataset == "ASX":  # the two busy names; DVN and MWR print a few trades a day
            days = [d for d in days if d["symbol"] in ("BHP", "RIO")]
        chosen = [days[rng.randrange(len(days))] for _ in range(count)]
        out[dataset] = {
            "a": windows,
            "b": [Sample(dataset, d["symbol"], day_window(dataset, d["session"])) for d in chosen],
        }
    return out


def timed(fn: Callable[[Sample], Any], samples: list[Sample]) -> tuple[list[float], list[float]]:
    """(cold ms, warm ms): a first pass over the samples, then the same samples again.

    The first pass meets files and partitions the caches have not seen (what a query on data
    nobody asked about recently costs); the second is the steady state of a running service.
    """
    passes: list[list[float]] = [[], []]
    for times in passes:
        for s in samples:
            started = time.perf_counter()
            fn(s)
            times.append((time.perf_counter() - started) * 1000)
    return passes[0], passes[1]


class Http:
    """The API under uvicorn on a free port in this process, and a keep-alive client."""

    def __init__(self, engine: QueryEngine, data_dir: Path) -> None:
        import httpx
        import uvicorn

        from k2.api import create_app
        from k2.config import load_settings

        settings = load_settings(data_dir=data_dir, api={"port": _free_port(), "rate_limit_per_minute": 10**9,
                                                          "max_rows": 1_000_000, "query_timeout_s": 60})  # fmt: skip
        self.server = uvicorn.Server(uvicorn.Config(create_app(settings, engine=engine), host="127.0.0.1",
                                                    port=settings.api.port, log_config=None, access_log=False,
                                                    log_level="warning"))  # fmt: skip
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{settings.api.port}", timeout=120)

    def get(self, path: str, **params: Any) -> None:
        response = self.client.get(path, params=params)
        response.raise_for_status()
        response.content  # noqa: B018 - the body is part of the latency

    def close(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=10)


def k2_queries(engine: QueryEngine, http: Http) -> dict[str, Callable[[Sample], Any]]:
    def iso(t: datetime) -> str:
        return t.isoformat()

    return {
        "a": lambda s: engine.ticks("trades", (s.symbol,), s.window, limit=1_000_000),
        "b": lambda s: engine.bars((s.symbol,), s.window, 60_000_000),
        "c": lambda s: engine.trades_with_quotes((s.symbol,), s.window, 300_000_000),
        "d:a": lambda s: http.get(
            "/v1/trades", symbols=s.symbol, start=iso(s.window.start), end=iso(s.window.end), limit=1_000_000
        ),
        "d:b": lambda s: http.get(
            "/v1/bars", symbols=s.symbol, start=iso(s.window.start), end=iso(s.window.end), interval="1m"
        ),
        "d:c": lambda s: http.get(
            "/v1/trades-with-quotes",
            symbols=s.symbol,
            start=iso(s.window.start),
            end=iso(s.window.end),
            tolerance="5m",
        ),
    }


def build_arctic(path: Path, trades: pl.DataFrame) -> Any:
    import arcticdb

    lib = arcticdb.Arctic(f"lmdb://{path}").get_library("ticks", create_if_missing=True)
    frame = trades.select(
        pl.col("symbol"),
        pl.col("exchange_ts").dt.replace_time_zone(None).alias("ts"),
        pl.col("price").cast(pl.Float64),
        pl.col("size").cast(pl.Float64),
        (pl.col("price").cast(pl.Float64) * pl.col("size").cast(pl.Float64)).alias("notional"),
        pl.col("sequence"),
    )
    for (symbol,), part in frame.partition_by("symbol", as_dict=True).items():
        lib.write(str(symbol), part.drop("symbol").to_pandas().set_index("ts"))
    return lib


def arctic_queries(lib: Any) -> dict[str, Callable[[Sample], Any]]:
    from arcticdb import QueryBuilder

    def naive(t: datetime) -> datetime:
        return t.astimezone(UTC).replace(tzinfo=None)

    def bars(s: Sample) -> Any:
        q = QueryBuilder().resample("1min").agg({
            "open": ("price", "first"), "high": ("price", "max"), "low": ("price", "min"),
            "close": ("price", "last"), "volume": ("size", "sum"), "notional": ("notional", "sum"),
            "trades": ("price", "count"),
        })  # fmt: skip
        data = lib.read(
            s.symbol, date_range=(naive(s.window.start), naive(s.window.end)), query_builder=q
        ).data
        data["vwap"] = data["notional"] / data["volume"]
        return data

    return {
        "a": lambda s: lib.read(s.symbol, date_range=(naive(s.window.start), naive(s.window.end))).data,
        "b": bars,
    }


Figures = dict[tuple[str, str], tuple[float, float, float, float]]


def measure(
    queries: dict[str, Callable[[Sample], Any]],
    samples: dict[str, dict[str, list[Sample]]],
    reps: dict[str, int],
) -> Figures:
    """(dataset, query) -> (cold p50, cold p99, warm p50, warm p99) in ms."""
    out: Figures = {}
    for dataset, by_kind in samples.items():
        for name, fn in queries.items():
            kind = name.split(":")[-1]
            chosen = by_kind["a" if kind == "a" else "b"][: reps[kind]]
            cold, warm = timed(fn, chosen)
            out[(dataset, name)] = (*_p(cold), *_p(warm))
            print(f"    {dataset} {name}: cold p50/p99 {_p(cold)[0]:.1f}/{_p(cold)[1]:.1f} ms, "
                  f"warm {_p(warm)[0]:.2f}/{_p(warm)[1]:.2f} ms", flush=True)  # fmt: skip
    return out


def _p(times: list[float]) -> tuple[float, float]:
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def report(results: dict[str, Figures]) -> None:
    arctic = results["ArcticDB"]
    print(
        "\nquery latency in ms: p50 / p99 of the first pass over the samples (cold) and of a second pass (warm)"
    )
    head = f"{'layout':<10} {'data':<4} {'query':<5} {'cold p50':>9} {'cold p99':>9} {'warm p50':>9} {'warm p99':>9}"
    print(f"{head}   {'K2/ArcticDB warm p50':>20} {'p99':>6}   target (warm p99)")
    for layout in ("streaming", "compacted", "ArcticDB"):
        for (dataset, name), (c50, c99, w50, w99) in results[layout].items():
            ratio = ""
            if layout != "ArcticDB" and (dataset, name) in arctic:
                a50, a99 = arctic[(dataset, name)][2:]
                ratio = f"{w50 / a50:>20.2f} {w99 / a99:>6.2f}"
            target = ""
            if layout != "ArcticDB" and name in TARGETS_MS:
                target = f"<= {TARGETS_MS[name]:.0f} ms: {'ok' if w99 <= TARGETS_MS[name] else 'MISSED'}"
                target += f" (cold {'ok' if c99 <= TARGETS_MS[name] else 'missed'})"
            print(
                f"{layout:<10} {dataset:<4} {name:<5} {c50:>9.2f} {c99:>9.2f} {w50:>9.2f} {w99:>9.2f}   {ratio:<27}   {target}"
            )


def _flat(results: dict[str, Figures], commits: int, symbols: int) -> dict[str, float]:
    """``<layout>_<data>_<query>_<cold|warm>_<p50|p99>_ms``; query ``d_a`` is (a) through HTTP."""
    out: dict[str, float] = {"streaming_commits": commits, "simulated_symbols": symbols}
    for layout, figures in results.items():
        for (dataset, name), values in figures.items():
            for label, value in zip(("cold_p50", "cold_p99", "warm_p50", "warm_p99"), values, strict=True):
                key = f"{layout}_{dataset}_{name.replace(':', '_')}_{label}_ms"
                out[key.lower()] = value
    return out


def _plan(engine: QueryEngine) -> None:
    """Plan the current snapshots once, as a service does at start-up: "cold" then means cold
    data caches, not the one-off full plan of a table (timed here on its own)."""
    from k2.query.files import Prune
    from k2.query.params import TimeTravel

    for kind in ("trades", "quotes"):
        started = time.perf_counter()
        scan = engine.reader.scan(kind, TimeTravel(), Prune())
        print(f"  planned {kind}: {len(scan.files)} files in {(time.perf_counter() - started) * 1000:.0f} ms")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="200 commits, 20 simulated symbols, fewer reps")
    parser.add_argument("--commits", type=int, default=None)
    parser.add_argument("--symbols", type=int, default=None)
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--lake", default=None, help="Keep the streamed lake here and reuse it in later runs")
    args = parser.parse_args(argv)
    commits = args.commits or (200 if args.quick else 1000)
    symbols = args.symbols or (20 if args.quick else 100)
    base = args.reps or (60 if args.quick else 200)
    reps = {"a": base, "b": base, "c": max(base // 6, 8)}
    root = Path(tempfile.mkdtemp(prefix="k2-bench-query-"))
    try:
        print(f"data: ASX sample + {symbols} simulated symbols, one day", flush=True)
        data = load_data(symbols)
        print(f"  trades {data['trades'].height:,}  quotes {data['quotes'].height:,}", flush=True)
        lake = Path(args.lake).resolve() if args.lake else root / "lake"
        tables = open_lake(lake, data, commits)
        catalog = tables["trades"].catalog
        samples = draw_samples(data["trades"], max(reps.values()) + 8, seed=5)
        # The hot-row cache sized to hold the benchmark's trades and quotes (the default is 2 M rows).
        engine = QueryEngine(
            catalog, "k2", QueryLimits(max_rows=1_000_000, timeout_s=120), row_cache_rows=6_000_000
        )
        _plan(engine)
        http = Http(engine, root / "api")
        results: dict[str, Any] = {}
        try:
            print(f"K2, streaming layout ({commits} commits):", flush=True)
            results["streaming"] = measure(k2_queries(engine, http), samples, reps)
            for kind in ("trades", "quotes"):
                done = compact(tables[kind].refresh())
                print(f"  compacted {kind}: {done.files_before} files -> {done.files_after}", flush=True)
            engine.refresh()
            _plan(engine)
            print("K2, compacted:", flush=True)
            results["compacted"] = measure(k2_queries(engine, http), samples, reps)
        finally:
            http.close()
        print("ArcticDB (LMDB):", flush=True)
        lib = build_arctic(root / "arctic", data["trades"])
        results["ArcticDB"] = measure(arctic_queries(lib), samples, reps)
        report(results)
        write_result("bench_query", _flat(results, commits, symbols), quick=args.quick)
        print(f"\npartial-aggregate cache: {len(engine.partials)} entries, {engine.partials.rows:,} rows")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
