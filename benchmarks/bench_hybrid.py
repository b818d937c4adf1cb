"""Hybrid queries (Iceberg + the live Kafka tail): latency beside Iceberg alone, and freshness.

    python -m benchmarks.bench_hybrid [--quick]

1. History: 16 minutes of trades and quotes for ``--symbols`` symbols (exchange time = the last 16
   minutes of wall time) are produced and ingested by ``k2 ingest`` (a subprocess).
2. Live: a feed produces ``--rate`` messages/s with exchange time = now, while the pipeline commits
   every 5 s, so the uncommitted tail of any query spans 0–5 s.
3. Latency, interleaved in rounds: ``recent`` for one symbol, 15 minutes (the hybrid engine, reading
   the symbol's partition only; and reading every partition), and the same window from Iceberg
   alone (the query engine at its current snapshot: what the tail costs).
4. Freshness: a probe tick is produced; the time until it is visible through the hybrid engine
   (a query loop) and through a live subscription (``LiveSubscription``, as /v1/stream uses it).

Services are started through K2's launcher in a temporary directory on free ports, and stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from benchmarks.results import write_result
from benchmarks.services import kafka_broker
from k2.config import LogSettings, Settings, load_settings
from k2.config.hybrid import HybridSettings
from k2.hybrid import HybridEngine
from k2.hybrid.live import LiveSubscription
from k2.lake import ensure_tables, open_catalog
from k2.lake.offsets import table_offsets
from k2.observability.logging import configure_logging
from k2.query.engine import QueryEngine
from k2.query.params import TimeRange
from k2.schemas import frame_schema, message_ids
from k2.stream.admin import ensure_topics
from k2.stream.producer import TickProducer

__all__ = ["main"]

HISTORY_MIN = 16
PROBE = "PRB"
_US = 1_000_000


def _services() -> contextlib.AbstractContextManager[Settings]:
    return kafka_broker(partitions=4, lake={"commit_interval_s": 5.0}, log={"level": "WARNING"})


class Ticks:
    """Trades and quotes with continuing per-symbol sequences; exchange times are given."""

    def __init__(self, symbols: list[str], seed: int = 1, first_sequence: int = 1) -> None:
        self.symbols = np.array(symbols)
        start = first_sequence - 1
        self.seq = {
            "trades": np.full(len(symbols), start, np.int64),
            "quotes": np.full(len(symbols), start, np.int64),
        }
        self.rng = np.random.default_rng(seed)

    def frame(self, kind: str, times_us: np.ndarray, which: np.ndarray) -> pl.DataFrame:
        n = len(times_us)
        counts = self.seq[kind]
        sequence = np.empty(n, np.int64)
        for i, s in enumerate(which.tolist()):  # per-symbol counters: a small loop per batch
            counts[s] += 1
            sequence[i] = counts[s]
        day = datetime.fromtimestamp(int(times_us[0]) / _US, UTC).date() if n else date.today()
        mid = self.rng.integers(5_000_000, 50_000_000, n)
        frame = pl.DataFrame({
            "exchange": "SIM", "symbol": self.symbols[which], "session": day, "sequence": sequence,
            "exchange_ts": pl.Series(times_us).cast(pl.Datetime("us", "UTC")),
            "ingest_ts": pl.Series(times_us).cast(pl.Datetime("us", "UTC")),
        })  # fmt: skip
        dec = pl.Decimal(18, 6)
        if kind == "trades":
            frame = frame.with_columns(
                (pl.Series(mid) / 1e6).cast(dec).alias("price"),
                pl.Series(self.rng.integers(1, 5_000, n)).cast(dec).alias("size"),
                pl.lit(None, pl.String).alias("trade_id"),
                pl.lit(None, pl.String).alias("qualifiers"),
                pl.lit(None, pl.String).alias("venue"),
            )
        else:
            frame = frame.with_columns(
                (pl.Series(mid - 5_000) / 1e6).cast(dec).alias("bid_price"),
                (pl.Series(mid + 5_000) / 1e6).cast(dec).alias("ask_price"),
                pl.Series(self.rng.integers(1, 5_000, n)).cast(dec).alias("bid_size"),
                pl.Series(self.rng.integers(1, 5_000, n)).cast(dec).alias("ask_size"),
            )
        frame = frame.with_columns(message_ids(kind, frame).alias("message_id"))
        return frame.select([pl.col(c).cast(t) for c, t in frame_schema(kind).items()])

    def send(self, producer: TickProducer, times_us: np.ndarray) -> None:
        """Trades (40 %) and quotes (60 %) at these exchange times, symbols drawn uniformly."""
        which = self.rng.integers(0, len(self.symbols), len(times_us))
        is_trade = self.rng.random(len(times_us)) < 0.4
        for kind, mask in (("trades", is_trade), ("quotes", ~is_trade)):
            if mask.any():
                producer.send(kind, self.frame(kind, times_us[mask], which[mask]))


def _now_us() -> int:
    return int(time.time() * _US)


def _history(settings: Settings, ticks: Ticks, per_symbol_per_s: float) -> int:
    """16 minutes of past ticks, produced as fast as possible; returns how many."""
    producer = TickProducer(settings.kafka)
    end = _now_us()
    count = int(len(ticks.symbols) * per_symbol_per_s * HISTORY_MIN * 60)
    times = np.sort(np.random.default_rng(2).integers(end - HISTORY_MIN * 60 * _US, end, count))
    for lo in range(0, count, 50_000):
        ticks.send(producer, times[lo : lo + 50_000])
    producer.close()
    return count


def _ingest(settings: Settings) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("K2_")}
    env.update(
        K2_DATA_DIR=str(settings.data_dir), K2_KAFKA__PORT=str(settings.kafka.port),
        K2_KAFKA__TOPIC_PREFIX=settings.kafka.topic_prefix, K2_PIPELINE__GROUP_ID=settings.pipeline.group_id,
        K2_LAKE__COMMIT_INTERVAL_S=str(settings.lake.commit_interval_s), K2_LOG__LEVEL="WARNING",
        K2_LOG__FORMAT="json",
    )  # fmt: skip
    # its log (gap warnings: the live feed's sequences start past the history's) is not the report
    quiet = subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-m", "k2.cli", "ingest"], env=env, stdout=quiet, stderr=quiet)


def _caught_up(settings: Settings, total: int, timeout_s: float) -> None:
    catalog = open_catalog(settings)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = 0
        for kind in ("trades", "quotes"):
            table = catalog.load_table(f"{settings.lake.namespace}.{kind}")
            done += sum(table_offsets(table).values())
        if done >= total:
            return
        time.sleep(1.0)
    raise TimeoutError(f"the pipeline ingested {done:,} of {total:,} messages in {timeout_s:.0f} s")


def _feed(settings: Settings, symbols: list[str], rate: int, stop: Any) -> None:
    """Live ticks with exchange time = now, ``rate`` messages/s in 20 ms batches (a child process,
    as a real feed would be: its encoding does not compete with the queries for the GIL)."""
    configure_logging(LogSettings(level="WARNING"))
    ticks = Ticks(symbols, seed=7, first_sequence=1_000_000)  # after the history's sequences
    producer = TickProducer(settings.kafka)
    began, sent = time.perf_counter(), 0
    while not stop.is_set():
        n = max(1, int(rate * 0.02))
        ticks.send(producer, np.full(n, _now_us(), np.int64))
        producer.poll(0)
        sent += n
        time.sleep(max(0.0, began + sent / rate - time.perf_counter()))
    producer.close()


def _percentiles(samples: list[float]) -> tuple[float, float]:
    arr = np.array(samples) * 1000
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def _latency(variants: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(rounds):
        random.Random(r).shuffle(names)
        for name in names:
            started = time.perf_counter()
            variants[name]()
            out[name].append(time.perf_counter() - started)
        time.sleep(0.01)
    return out


def _probe(ticks: Ticks, producer: TickProducer) -> tuple[str, float]:
    """Send one probe trade now; returns its message id and the send time."""
    frame = ticks.frame("trades", np.array([_now_us()]), np.array([len(ticks.symbols) - 1]))
    sent_at = time.perf_counter()
    producer.send("trades", frame)
    producer.poll(0)
    return frame["message_id"][0], sent_at


def _fresh_query(hybrid: HybridEngine, ticks: Ticks, producer: TickProducer, samples: int) -> list[float]:
    out = []
    for _ in range(samples):
        mid, sent_at = _probe(ticks, producer)
        while True:
            now = datetime.now(UTC)
            window = TimeRange(now - timedelta(minutes=1), now + timedelta(minutes=1))
            rows = hybrid.ticks("trades", (PROBE,), window).rows
            if mid in rows["message_id"].to_list():
                out.append(time.perf_counter() - sent_at)
                break
            producer.poll(0)
        time.sleep(random.uniform(0.05, 0.15))
    return out


def _fresh_live(hybrid: HybridEngine, ticks: Ticks, producer: TickProducer, samples: int) -> list[float]:
    sub = LiveSubscription(hybrid, ("trades",), (PROBE,), bars=False)
    arrived: dict[str, float] = {}
    stop = threading.Event()

    def listen() -> None:
        sub.start()
        while not stop.is_set():
            for event in sub.poll():
                if event.kind == "trade" and event.rows is not None:
                    at = time.perf_counter()
                    for mid in event.rows["message_id"].to_list():
                        arrived[mid] = at
            time.sleep(hybrid.hybrid.stream_interval_s)

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    time.sleep(0.5)
    out = []
    for _ in range(samples):
        mid, sent_at = _probe(ticks, producer)
        deadline = time.monotonic() + 10
        while mid not in arrived and time.monotonic() < deadline:
            producer.poll(0.001)
        if mid in arrived:
            out.append(arrived[mid] - sent_at)
        time.sleep(random.uniform(0.05, 0.15))
    stop.set()
    thread.join(5)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="20 symbols, 5,000 msg/s, 200 rounds, 30 probes")
    parser.add_argument("--symbols", type=int, default=None)
    parser.add_argument("--rate", type=int, default=None, help="live messages per second")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--probes", type=int, default=None)
    args = parser.parse_args(argv)
    n_symbols = args.symbols or (20 if args.quick else 50)
    rate = args.rate or (5_000 if args.quick else 10_000)
    rounds = args.rounds or (200 if args.quick else 1_000)
    probes = args.probes or (30 if args.quick else 100)
    configure_logging(LogSettings(level="WARNING"))
    symbols = [f"S{i:03d}" for i in range(n_symbols - 1)] + [PROBE]
    with _services() as base:
        tag = uuid.uuid4().hex[:8]
        settings = load_settings(
            data_dir=base.data_dir / tag,
            kafka={**base.kafka.model_dump(), "topic_prefix": f"b{tag}."},
            pipeline={"group_id": f"g{tag}"},
            lake=base.lake.model_dump(),
            log={"level": "WARNING"},
        )
        ensure_topics(settings.kafka)
        ensure_tables(open_catalog(settings), settings.lake.namespace)
        ticks = Ticks(symbols)
        # ~1,700 trades per symbol in 15 minutes: MEASURED.md's one-symbol window
        total = _history(settings, ticks, per_symbol_per_s=4.7)
        print(
            f"history: {total:,} ticks over {HISTORY_MIN} minutes, {n_symbols} symbols; ingesting …",
            flush=True,
        )
        pipeline = _ingest(settings)
        spawn = multiprocessing.get_context("spawn")
        stop = spawn.Event()
        feed = spawn.Process(target=_feed, args=(settings, symbols[:-1], rate, stop), daemon=True)
        engine = QueryEngine.from_settings(settings, refresh_interval_s=1.0)
        hybrid = HybridEngine(settings, engine, hybrid=HybridSettings())
        every = HybridEngine(settings, engine, hybrid=HybridSettings(routing="all"))
        producer = TickProducer(settings.kafka)
        try:
            _caught_up(settings, total, timeout_s=300)
            feed.start()
            time.sleep(6.0)  # one full commit interval of live ticks behind us
            symbol = symbols[0]

            def iceberg_only() -> object:
                now = datetime.now(UTC)
                return engine.ticks(
                    "trades", (symbol,), TimeRange(now - timedelta(minutes=15), now), limit=100_000
                )

            variants: dict[str, Callable[[], object]] = {
                "hybrid recent (symbol's partition)": lambda: hybrid.recent(
                    "trades", (symbol,), 15, anchor="now"
                ),
                "hybrid recent (every partition)": lambda: every.recent(
                    "trades", (symbol,), 15, anchor="now"
                ),
                "hybrid recent (cached tail)": lambda: hybrid.recent(
                    "trades", (symbol,), 15, anchor="now", consistency="cached"
                ),
                "Iceberg only (query engine)": iceberg_only,
            }
            for fn in variants.values():  # warm caches and consumers
                fn()
            sample = hybrid.recent("trades", (symbol,), 15, anchor="now")
            print(f"measuring {rounds} rounds: {sample.rows.height:,} rows per answer, "
                  f"{sample.tail_rows} from the tail …", flush=True)  # fmt: skip
            tails = []
            for _ in range(20):
                r = hybrid.recent("trades", (symbol,), 15, anchor="now")
                tails.append(r.tail_rows)
                time.sleep(0.25)
            latency = _latency(variants, rounds)
            fresh_q = _fresh_query(hybrid, ticks, producer, probes)
            fresh_l = _fresh_live(hybrid, ticks, producer, probes)
        finally:
            stop.set()
            feed.join(10)
            pipeline.send_signal(signal.SIGTERM)
            try:
                pipeline.wait(60)
            except subprocess.TimeoutExpired:
                pipeline.kill()
            producer.close()
            hybrid.close()
            every.close()
            engine.close()
    base_p50, _ = _percentiles(latency["Iceberg only (query engine)"])
    print(
        f"\nrecent(trades, one symbol, 15 min) while {rate:,} msg/s stream in, {n_symbols} symbols, 4 partitions;"
    )
    print(f"uncommitted tail per answer: {min(tails)}-{max(tails)} rows of the symbol (commit interval 5 s)")
    print(f"{'query':38} {'p50 ms':>8} {'p99 ms':>8} {'p50 vs Iceberg only':>20}")
    for name, values in latency.items():
        p50, p99 = _percentiles(values)
        print(f"{name:38} {p50:8.1f} {p99:8.1f} {p50 / base_p50:20.2f}")
    print("\nfreshness (probe tick produced -> visible), target p99 <= 250 ms")
    for name, values in (
        ("through the hybrid engine (query loop)", fresh_q),
        ("through a live subscription", fresh_l),
    ):
        if values:
            p50, p99 = _percentiles(values)
            print(f"{name:38} {p50:8.1f} {p99:8.1f}   ({len(values)} probes)")
        else:
            print(f"{name:38} no probe arrived")
    figures: dict[str, float] = {"live_rate_msg_per_s": rate, "symbols": n_symbols}
    for key, values in (
        ("recent_symbol_partition", latency["hybrid recent (symbol's partition)"]),
        ("recent_every_partition", latency["hybrid recent (every partition)"]),
        ("recent_cached_tail", latency["hybrid recent (cached tail)"]),
        ("iceberg_only", latency["Iceberg only (query engine)"]),
        ("freshness_hybrid_query", fresh_q),
        ("freshness_live_subscription", fresh_l),
    ):
        if values:
            figures[f"{key}_p50_ms"], figures[f"{key}_p99_ms"] = _percentiles(values)
    write_result("bench_hybrid", figures, quick=args.quick)
    print(
        f"targets: query p99 <= 50 ms ({'met' if _percentiles(latency[next(iter(latency))])[1] <= 50 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
