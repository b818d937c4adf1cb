"""K2 and its peers side by side (issue #17, goal 3): same data, same run, servers started here.

    python -m benchmarks.bench_peers [--quick] [--sim-trades N] [--symbols N] [--reps N] [--rounds N]

Data: the ASX sample (data/asx-2014-03, 200,545 trades) plus 2,000,000 simulated trades
(k2.feeds.simulator, exchange SIM, 100 symbols; --quick: 200,000 over 20) and their quotes.
Every system gets the same rows:
  - K2: appended to its Iceberg tables in commits of 200,000 rows (``lake.commit_rows``), then
    compacted; queried in-engine (``QueryEngine``) and over HTTP through ``k2 serve``, a process,
    in JSON (``http``, as QuestDB answers) and in Arrow IPC (``http-arrow``, ``format=arrow``), each
    from its own server so that neither meets answers the other has cached;
  - QuestDB: its server jar from Maven Central, a process on loopback; ILP over HTTP into WAL tables
    with DEDUP UPSERT KEYS(ts, symbol, sequence); queried over HTTP /exec, in-engine from the times
    the server reports (``timings``);
  - ClickHouse via chDB (embedded: in-engine only): MergeTree ORDER BY (symbol, ts);
  - ArcticDB (LMDB), as ``bench_query`` builds it: trades only, so no as-of join.

Queries, on random samples drawn from the data, half ASX and half SIM: (a) one symbol's 15-minute
window of trades, all columns; (b) 1-minute OHLCV + VWAP bars of one symbol-day; (c) that day's
trades each with its prevailing quote (as-of join, stale after 5 minutes). First every system's
answers are checked against K2's (rows, and the sums of size and price / volume and close / bid
and ask: ``peer_k2.CHECKED``), then one warm-up pass, then
``--rounds`` rounds, each timing every system in turn (the starting system rotates) over the same
fresh samples, not seen in earlier rounds: the table shows the median over rounds of each round's
p50 and p99. (Days repeat across rounds all the same: the ASX has ten busy symbol-days.)

Ingest is rows (trades + quotes; ArcticDB: trades) per second until written and visible, and per
CPU second (the benchmark's process, plus QuestDB's server for QuestDB): K2's
Iceberg appends (not the Kafka pipeline: ``bench_ingest`` measures that), QuestDB's ILP until its WAL
is applied, chDB's INSERTs, ArcticDB's writes. K2's compaction and chDB's merge are not timed.
Bytes per trade is the trades table alone: K2 its current Parquet data files; QuestDB the blocks
of its partitions after the server stopped (while serving, the partition being written holds
pre-extended pages; that figure is printed too); chDB its active parts; ArcticDB its LMDB files.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from benchmarks.bench_query import ASX_DIR, Sample, arctic_queries, build_arctic, draw_samples
from benchmarks.clocks import Clock
from benchmarks.peer_chdb import ChDB
from benchmarks.peer_k2 import CHECKED, Check, K2Lake, K2Serve
from benchmarks.peer_questdb import QUESTDB_VERSION, QuestDB, questdb_jar
from benchmarks.results import write_result
from k2.config import load_settings
from k2.feeds import MarketConfig, Simulator, SimulatorConfig, read_asx, symbol_names

__all__ = ["main"]

QUERIES = {"a": "15-min window", "b": "1-min bars", "c": "as-of join"}
Call = Callable[[Sample], tuple[Any, float | None]]


@dataclass
class Entry:
    """One system seen one way: ``view`` is what the wall clock around ``calls`` measures; ``reported``
    names the view of the time the system itself returns with each answer (QuestDB's timings)."""

    system: str
    view: str
    calls: dict[str, Call]
    check: Callable[[str, Any], Check]
    reported: str | None = None


def load_data(sim_trades: int, symbols: int) -> dict[str, pl.DataFrame]:
    """ASX + the first ``sim_trades`` simulated trades (and quotes up to the last of them), K2's schema."""
    asx = read_asx(ASX_DIR).delivery
    sim = Simulator(SimulatorConfig(MarketConfig(symbols=symbol_names(symbols, 11)), seed=11))
    parts: dict[str, list[pl.DataFrame]] = {"trades": [], "quotes": []}
    held = 0
    for delivery in sim.deliveries():
        parts["trades"].append(delivery.trades)
        parts["quotes"].append(delivery.quotes)
        held += delivery.trades.height
        if held >= sim_trades:
            break
    trades = pl.concat(parts["trades"]).sort("exchange_ts", maintain_order=True).head(sim_trades)
    last = trades["exchange_ts"].max()
    quotes = pl.concat(parts["quotes"]).filter(pl.col("exchange_ts") <= last)
    out = {}
    for kind, frame in (
        ("trades", pl.concat([asx.trades, trades])),
        ("quotes", pl.concat([asx.quotes, quotes])),
    ):
        frame = frame.sort("exchange_ts", maintain_order=True)
        out[kind] = frame.with_columns(
            pl.lit(0, dtype=pl.Int32).alias("kafka_partition"),
            pl.int_range(frame.height, dtype=pl.Int64).alias("kafka_offset"),
        )
    return out


def peer_frame(frame: pl.DataFrame, kind: str, *, session_ts: bool) -> pl.DataFrame:
    """The peers' columns: K2's without the Kafka lineage, decimals as doubles, ``exchange_ts`` as ``ts``.

    QuestDB has no DATE column over ILP, so it takes the session as a timestamp (``session_ts``).
    """
    values = ["price", "size"] if kind == "trades" else ["bid_price", "ask_price", "bid_size", "ask_size"]
    text = ["message_id", "trade_id", "qualifiers", "venue"] if kind == "trades" else ["message_id"]
    session = pl.col("session").cast(pl.Datetime("us", "UTC")) if session_ts else pl.col("session")
    return frame.select(
        pl.col("symbol"), pl.col("exchange"), session, pl.col("sequence"), pl.col("exchange_ts").alias("ts"),
        pl.col("ingest_ts"), *[pl.col(c).cast(pl.Float64) for c in values],
        *[pl.col(c).fill_null("") for c in text],
    )  # fmt: skip


def interleave(samples: dict[str, dict[str, list[Sample]]], count: int) -> dict[str, list[Sample]]:
    """Per query, ``count`` samples alternating ASX and SIM; (c) uses the days of (b)."""
    out: dict[str, list[Sample]] = {}
    for query, source in (("a", "a"), ("b", "b"), ("c", "b")):
        pairs = zip(samples["ASX"][source], samples["SIM"][source], strict=True)
        out[query] = [s for pair in pairs for s in pair][:count]
    return out


def check_answers(entries: list[Entry], samples: dict[str, list[Sample]], per_query: int) -> dict[str, bool]:
    """Every entry's (rows, sum) against K2 in-engine's, on the first samples of each query."""
    base = entries[0]
    verdict: dict[str, bool] = {}
    print("\nanswer check against K2 in-engine: rows, and the sums of "
          + "; ".join(f"{QUERIES[q]}: {a} and {b}" for q, (a, b) in CHECKED.items()), flush=True)  # fmt: skip
    for query in QUERIES:
        chosen = samples[query][:per_query]
        expected = [base.check(query, base.calls[query](s)[0]) for s in chosen]
        for entry in entries[1:]:
            if query not in entry.calls:
                continue
            got = [entry.check(query, entry.calls[query](s)[0]) for s in chosen]
            bad = [(s.symbol, e, g) for s, e, g in zip(chosen, expected, got, strict=True)
                   if e[0] != g[0] or not all(_close(x, y) for x, y in zip(e[1:], g[1:], strict=True))]  # fmt: skip
            key = f"{entry.system}_{entry.view}_{query}"
            verdict[key] = not bad
            rows = sum(e[0] for e in expected)
            note = (
                "equal"
                if not bad
                else f"DIFFERENT in {len(bad)}: "
                + "; ".join(
                    f"{sym} K2 {e[0]} rows/{e[1]:.2f}/{e[2]:.4f}, got {g[0]}/{g[1]:.2f}/{g[2]:.4f}"
                    for sym, e, g in bad[:3]
                )
            )
            print(f"  {QUERIES[query]:<14} {entry.system:<9} {entry.view:<10} {len(chosen)} samples, "
                  f"{rows:,} K2 rows: {note}", flush=True)  # fmt: skip
    return verdict


def _close(a: float, b: float) -> bool:
    """Equal sums up to float rounding (K2 sums decimals, the peers doubles)."""
    return abs(a - b) <= 1e-9 * max(abs(a), abs(b), 1.0)


Timings = dict[tuple[str, str, str], list[tuple[float, float]]]


def measure(entries: list[Entry], samples: dict[str, list[Sample]], reps: int, rounds: int) -> Timings:
    """(system, view, query) -> per round (p50, p99) in ms.

    The first ``reps`` samples warm every entry up (connections, JIT, page cache); each round then
    takes the next ``reps``, so no round repeats a query a cache has answered already.
    """
    out: Timings = {}
    for query in QUERIES:
        active = [e for e in entries if query in e.calls]
        for entry in active:
            for s in samples[query][:reps]:
                entry.calls[query](s)
        for r in range(rounds):
            chosen = samples[query][(r + 1) * reps : (r + 2) * reps]
            for entry in active[r % len(active) :] + active[: r % len(active)]:
                wall: list[float] = []
                reported: list[float] = []
                for s in chosen:
                    started = time.perf_counter()
                    _, own = entry.calls[query](s)
                    wall.append((time.perf_counter() - started) * 1000)
                    if own is not None:
                        reported.append(own)
                out.setdefault((entry.system, entry.view, query), []).append(_p(wall))
                if entry.reported and reported:
                    out.setdefault((entry.system, entry.reported, query), []).append(_p(reported))
        print(f"  timed {QUERIES[query]}: {rounds} rounds x {reps} samples", flush=True)
    return out


def _p(times: list[float]) -> tuple[float, float]:
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def summarise(timings: Timings) -> dict[tuple[str, str, str], tuple[float, float]]:
    return {
        k: (statistics.median(p[0] for p in v), statistics.median(p[1] for p in v))
        for k, v in timings.items()
    }


def report(
    figures: dict[tuple[str, str, str], tuple[float, float]],
    ingest: dict[str, tuple[float, float]],
    size: dict[str, float],
) -> dict[str, float]:
    """Print the table (Markdown) and the K2/fastest ratios; returns the flat figures for the JSON."""
    rows = sorted({(s, v) for s, v, _ in figures}, key=lambda k: (list(ingest).index(k[0]), k[1]))
    print("\n| system | view | ingest rows/s (per CPU-s) | " + " | ".join(f"{q} p50 / p99 ms" for q in QUERIES.values())
          + " | bytes/trade |")  # fmt: skip
    print("|---|---|---:|" + "---:|" * len(QUERIES) + "---:|")
    flat: dict[str, float] = {}
    for system, view in rows:
        cells = []
        for query in QUERIES:
            p = figures.get((system, view, query))
            cells.append(f"{p[0]:.2f} / {p[1]:.2f}" if p else "n/a")
            if p:
                flat[f"{system}_{view}_{query}_p50_ms".lower().replace("-", "_")] = p[0]
                flat[f"{system}_{view}_{query}_p99_ms".lower().replace("-", "_")] = p[1]
        print(
            f"| {system} | {view} | {ingest[system][0]:,.0f} ({ingest[system][1]:,.0f}) | "
            + " | ".join(cells)
            + f" | {size[system]:.1f} |"
        )
    for system in ingest:
        flat[f"{system}_ingest_rows_per_s".lower()] = ingest[system][0]
        flat[f"{system}_ingest_rows_per_cpu_s".lower()] = ingest[system][1]
        flat[f"{system}_bytes_per_trade".lower()] = size[system]
    print("\nK2 / fastest (1.00 = K2 fastest; above 1, K2 is that many times slower):")
    for i, (key, label) in enumerate(
        (("k2_ingest_vs_fastest", "rows/s"), ("k2_ingest_cpu_vs_fastest", "rows/CPU-s"))
    ):
        best = max(ingest, key=lambda s, i=i: ingest[s][i])
        flat[key] = ingest[best][i] / ingest["K2"][i]
        print(f"  ingest {label}: fastest / K2 = {flat[key]:.2f} (fastest: {best}; goal <= 2)")
    # K2 in each view against every peer's figure in the same view (its Arrow answers against the
    # peers' HTTP ones: no peer here answers HTTP in Arrow).
    for k2_view, peer_view in (("engine", "engine"), ("http", "http"), ("http-arrow", "http")):
        for query, label in QUERIES.items():
            peers = {s: p for (s, v, q), p in figures.items() if v == peer_view and q == query and s != "K2"}
            if ("K2", k2_view, query) not in figures or not peers:
                continue
            peers["K2"] = figures[("K2", k2_view, query)]
            for i, pct in enumerate(("p50", "p99")):
                best = min(peers, key=lambda s, i=i: peers[s][i])
                ratio = peers["K2"][i] / peers[best][i]
                flat[f"k2_{k2_view}_{query}_{pct}_vs_fastest".replace("-", "_")] = ratio
                print(f"  {label:<14} {k2_view:<10} {pct}: {ratio:5.2f}  (fastest: {best})")
    return flat


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--quick", action="store_true", help="200,000 simulated trades, fewer samples and rounds"
    )
    parser.add_argument("--sim-trades", type=int, default=None)
    parser.add_argument("--symbols", type=int, default=None)
    parser.add_argument("--reps", type=int, default=None, help="Samples per query (default 100; --quick 30)")
    parser.add_argument("--rounds", type=int, default=None, help="Timed rounds (default 5; --quick 3)")
    args = parser.parse_args(argv)
    sim_trades = args.sim_trades or (200_000 if args.quick else 2_000_000)
    symbols = args.symbols or (20 if args.quick else 100)
    reps = args.reps or (30 if args.quick else 100)
    rounds = args.rounds or (3 if args.quick else 5)
    load_at_start = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="k2-bench-peers-"))
    jar = questdb_jar(load_settings().cache_dir)
    closers: list[Callable[[], None]] = []
    try:
        print(f"data: ASX sample + {sim_trades:,} simulated trades over {symbols} symbols", flush=True)
        data = load_data(sim_trades, symbols)
        trades, quotes = data["trades"], data["quotes"]
        rows = trades.height + quotes.height
        print(f"  trades {trades.height:,}  quotes {quotes.height:,}", flush=True)
        ingest: dict[str, tuple[float, float]] = {}  # rows per wall second, rows per CPU second
        size: dict[str, float] = {}

        print("K2: Iceberg appends", flush=True)
        lake = K2Lake(root / "k2")
        clock = lake.ingest(data, 200_000)
        ingest["K2"] = (rows / clock.wall, rows / clock.cpu)
        size["K2"] = lake.trades_bytes() / trades.height

        print("QuestDB: ILP over HTTP", flush=True)
        qdb = QuestDB(jar, root / "questdb")
        closers.append(qdb.close)
        clock = qdb.ingest(peer_frame(trades, "trades", session_ts=True),
                           peer_frame(quotes, "quotes", session_ts=True))  # fmt: skip
        ingest["QuestDB"] = (rows / clock.wall, rows / clock.cpu)
        qdb.resend(peer_frame(trades.head(20_000), "trades", session_ts=True))
        live_qdb_bytes = qdb.trades_bytes()

        print("ClickHouse (chDB): INSERT … SELECT FROM Python(arrow)", flush=True)
        ch = ChDB(root / "chdb")
        closers.append(ch.close)
        clock = ch.ingest(peer_frame(trades, "trades", session_ts=False),
                          peer_frame(quotes, "quotes", session_ts=False))  # fmt: skip
        ingest["chDB"] = (rows / clock.wall, rows / clock.cpu)
        size["chDB"] = ch.trades_bytes() / trades.height

        print("ArcticDB (LMDB): one symbol per ticker, trades only", flush=True)
        with Clock() as clock:
            lib = build_arctic(root / "arctic", trades)
        ingest["ArcticDB"] = (trades.height / clock.wall, trades.height / clock.cpu)
        size["ArcticDB"] = sum(p.stat().st_blocks * 512 for p in (root / "arctic").rglob("*") if p.is_file())
        size["ArcticDB"] /= trades.height

        print("K2: k2 serve", flush=True)
        # One server per answer format: sharing one, the second format would find the first one's
        # answers to the same samples in its caches.
        serve, serve_arrow = K2Serve(root / "k2"), K2Serve(root / "k2")
        closers += [serve.close, serve_arrow.close]
        arctic = arctic_queries(lib)
        entries = [
            Entry("K2", "engine", lake.queries(), K2Lake.check),
            Entry("K2", "http", serve.queries(), K2Serve.check),
            Entry("K2", "http-arrow", serve_arrow.queries("arrow"), K2Serve.check),
            Entry("QuestDB", "http", qdb.queries(), QuestDB.check, reported="engine"),
            Entry("chDB", "engine", ch.queries(), ChDB.check),
            Entry("ArcticDB", "engine", {q: (lambda s, f=f: (f(s), None)) for q, f in arctic.items()},
                  lambda q, df: (len(df), *(float(df[c].sum()) for c in CHECKED[q]))),
        ]  # fmt: skip
        drawn = reps * (rounds + 1)  # a warm-up set, then a fresh set per round
        samples = interleave(draw_samples(trades, drawn, seed=5), drawn)
        verdict = check_answers(entries, samples, per_query=min(reps, 10))
        if not all(verdict.values()):
            differ = ", ".join(k for k, ok in verdict.items() if not ok)
            print(
                f"WARNING: answers differ from K2's ({differ}): those timings compare different work",
                flush=True,
            )
        print(f"\ntiming: {reps} samples per query, {rounds} rounds", flush=True)
        figures = summarise(measure(entries, samples, reps, rounds))
        qdb.close()  # its sizes settle only once its writers are closed
        size["QuestDB"] = qdb.trades_bytes_at_rest() / trades.height
        print(f"  QuestDB trades bytes/trade: {size['QuestDB']:.1f} at rest, "
              f"{live_qdb_bytes / trades.height:.1f} while serving (pre-extended append pages)")  # fmt: skip
        flat = report(figures, ingest, size)
        flat.update({"trades": trades.height, "quotes": quotes.height, "samples": reps, "rounds": rounds})
        flat["answers_equal"] = all(verdict.values())
        # A shared machine's load moves these figures more than anything measured here: keep it with them.
        flat["load_1m_start"], flat["load_1m_end"] = load_at_start, os.getloadavg()[0]
        print(f"load average (1 min): {load_at_start:.1f} at start, {flat['load_1m_end']:.1f} at the end "
              f"({os.cpu_count()} CPUs)")  # fmt: skip
        flat["questdb_bytes_per_trade_serving"] = live_qdb_bytes / trades.height
        notes = (
            f"QuestDB {QUESTDB_VERSION} server jar (Maven Central) with the questdb client {version('questdb')}; "
            f"chDB {version('chdb')} (embedded: in-engine only); ArcticDB {version('arcticdb')} (LMDB); "
            f"load average {load_at_start:.1f} -> {flat['load_1m_end']:.1f} on {os.cpu_count()} CPUs"
        )
        write_result("bench_peers", flat, quick=args.quick, notes=notes)
    finally:
        for close in reversed(closers):
            close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
