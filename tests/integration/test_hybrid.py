"""The hybrid boundary on the real broker: every answer equals the stream up to what it read.

A simulated feed (duplicates, reorders, gaps, malformed payloads) is produced at ~8,000 messages/s
while ``k2 ingest`` commits every second. The hybrid engine is queried over and over; each answer
must hold exactly the ticks the stream had below the offsets the answer says it covered (first
arrival of each message id, dead letters excluded): never one missing, never one twice. The run
goes through a SIGKILL of the pipeline and its restart (the tail grows, then shrinks), a compaction
of both tables, and a phase where the restarted pipeline sheds load to the spill topics.

The truth is the producer side: a recording sink sees every message in the order it is produced,
and one producer with idempotence keeps that order per partition, so partition p's offsets
0, 1, 2… are the recorded messages whose key hashes to p, in order.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import polars as pl
import pytest
import typer
from fastapi import FastAPI
from fastapi.testclient import TestClient
from rich.console import Console
from typer.testing import CliRunner

from k2.api import create_app
from k2.api.routes import recent as recent_routes
from k2.cli import recent_cmd
from k2.cli.context import Context
from k2.config import Settings
from k2.config.hybrid import HybridSettings
from k2.feeds.delivery import Delivery
from k2.feeds.faults import FaultConfig
from k2.feeds.market import MarketConfig, symbol_names
from k2.feeds.publish import FeedPublisher
from k2.feeds.runner import run_simulation
from k2.feeds.simulator import Simulator, SimulatorConfig
from k2.hybrid import HybridEngine, HybridResult
from k2.lake import ensure_tables, open_catalog
from k2.lake.maintenance import compact
from k2.query.engine import QueryEngine
from k2.query.params import TimeRange
from k2.query.reader import QueryLimits
from k2.stream.admin import ensure_topics
from k2.stream.dlq import DeadLetter
from k2.stream.producer import TickProducer

RATE = 8_000  # messages per second
FEED_S = 24.0  # the feed runs at least this long ...
FEED_CAP_S = 90.0  # ... and on, up to this, until the answers covered every case (mixed ones need a feed)
ALL_TIME = TimeRange(datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
FAULTS = FaultConfig(dup_rate=0.01, reorder_rate=0.01, reorder_window=20, gap_rate=0.001,
                     late_fill_fraction=0.5, malformed_rate=0.0005)  # fmt: skip
# The restarted pipeline sheds load: with these bands any busy share above 3 % is GRACEFUL, which
# defers the least active symbols to the spill topics; they come back (back-fill) once the feed
# stops and the level returns to NORMAL.
SHEDDING = {
    "K2_RESILIENCE__BATCH_RATIO__SOFT__UP": "0.02", "K2_RESILIENCE__BATCH_RATIO__SOFT__DOWN": "0.01",
    "K2_RESILIENCE__BATCH_RATIO__GRACEFUL__UP": "0.03", "K2_RESILIENCE__BATCH_RATIO__GRACEFUL__DOWN": "0.02",
    "K2_RESILIENCE__RATIO_WINDOW_S": "2", "K2_RESILIENCE__COOLDOWN_S": "2",
}  # fmt: skip


class Recorder:
    """A ``TickSink`` that records every message, per topic, in production order."""

    def __init__(self, producer: TickProducer, partitions: int) -> None:
        self.producer = producer
        self.partitions = partitions
        self.log: dict[tuple[str, int], list[str | None]] = {}
        self.symbol_of: dict[str, str] = {}

    def _record(self, topic: str, keys: list[str], ids: list[str | None]) -> None:
        for key, mid in zip(keys, ids, strict=True):
            p = zlib.crc32(key.encode()) % self.partitions  # librdkafka's default partitioner
            self.log.setdefault((topic, p), []).append(mid)
            if mid is not None:
                self.symbol_of[mid] = key

    def send(self, kind: str, batch: pl.DataFrame) -> int:
        self._record(kind, batch["symbol"].to_list(), batch["message_id"].to_list())
        return self.producer.send(kind, batch)

    def send_raw(
        self, topic: str, key: bytes | None, value: bytes, headers: dict[str, str] | None = None
    ) -> None:
        assert key is not None
        self._record(topic.rsplit(".", 1)[-1], [key.decode()], [None])
        self.producer.send_raw(topic, key, value, headers)

    def send_dead_letter(self, letter: DeadLetter) -> None:
        self.producer.send_dead_letter(letter)

    def expected(self, kind: str, symbols: tuple[str, ...], covered: dict[int, int]) -> list[str]:
        """First arrivals of the symbols' message ids below the covered offsets."""
        seen: set[str] = set()
        out = []
        for p, end in covered.items():
            for mid in self.log.get((kind, p), [])[:end]:
                if mid is not None and mid not in seen and self.symbol_of[mid] in symbols:
                    seen.add(mid)
                    out.append(mid)
        return out


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("K2_")}
    env.update(
        K2_DATA_DIR=str(settings.data_dir),
        K2_KAFKA__PORT=str(settings.kafka.port),
        K2_KAFKA__TOPIC_PREFIX=settings.kafka.topic_prefix,
        K2_KAFKA__PARTITIONS=str(settings.kafka.partitions),
        K2_PIPELINE__GROUP_ID=settings.pipeline.group_id,
        K2_PIPELINE__INSTANCE_ID="hybrid-ingest",  # static membership: a restart takes over at once
        K2_LAKE__COMMIT_INTERVAL_S="1.0",
        K2_LOG__FORMAT="json",
        K2_LOG__LEVEL="WARNING",
        **extra,
    )
    return env


def _ingest(settings: Settings, **extra: str) -> subprocess.Popen[bytes]:
    # its log goes to a file: a pipe nobody reads blocks the ingester once 64 KB of warnings fill it
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with (settings.data_dir / "ingest.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "k2.cli", "ingest"],
            env=_env(settings, **extra),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def _compact_all(tables: list[Any]) -> None:
    for table in tables:
        compact(table)


def _check(result: HybridResult, recorder: Recorder, kind: str, symbols: tuple[str, ...]) -> set[str]:
    """The answer holds every expected tick once; returns ids beyond the covered prefix (spill copies)."""
    ids = result.rows["message_id"].to_list()
    if len(ids) != len(set(ids)):
        twice = result.rows.filter(pl.col("message_id").is_duplicated())
        lineage = [
            c
            for c in ("message_id", "symbol", "sequence", "kafka_partition", "kafka_offset")
            if c in twice.columns
        ]
        raise AssertionError(
            f"duplicate ticks {twice.select(lineage).sort(lineage).rows()} in {result.meta()}"
        )
    assert not result.truncated, result.truncated_reason
    source = {
        tp[1]: end
        for tp, end in result.covered.items()
        if tp[0].endswith(f".{kind}") and ".spill." not in tp[0]
    }
    for (_topic, _p), part in result.tail.parts.items():
        assert part.end >= part.high_watermark
    want = recorder.expected(kind, symbols, source)
    missing = set(want) - set(ids)
    assert not missing, f"{len(missing)} ticks missing from {result.meta()}"
    assert result.rows["symbol"].is_in(list(symbols)).all()
    assert result.rows["exchange_ts"].is_sorted()
    return set(ids) - set(want)


@pytest.fixture
def lake(settings: Settings) -> Settings:
    ensure_topics(settings.kafka)
    ensure_tables(open_catalog(settings), settings.lake.namespace)
    return settings


def test_answers_equal_the_stream_across_commits_kill_restart_compaction_and_shedding(
    lake: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUST_BACKTRACE", "0")  # malformed payloads make Polars panic (caught): quietly
    settings = lake
    names = symbol_names(12, 5)
    sim = Simulator(
        SimulatorConfig(MarketConfig(symbols=names, rate_per_symbol=0.5, chunk_ticks=4_000), FAULTS, seed=5),
        keep_truth=False,
    )
    producer = TickProducer(settings.kafka)
    recorder = Recorder(producer, settings.kafka.partitions)
    stop = threading.Event()
    feed = threading.Thread(
        target=lambda: run_simulation(sim, FeedPublisher(recorder, settings.kafka), rate=RATE,
                                      duration_s=FEED_CAP_S, stop=stop),
        daemon=True,
    )  # fmt: skip
    catalog = open_catalog(settings)
    # the whole stream in one answer at the end: a longer feed (FEED_CAP_S) passes the API's row cap
    limits = QueryLimits(max_rows=5_000_000, timeout_s=60.0)
    engine = QueryEngine(catalog, settings.lake.namespace, refresh_interval_s=0.25, limits=limits)
    hybrid = HybridEngine(settings, engine, hybrid=HybridSettings(read_timeout_s=10.0))
    rng = random.Random(3)
    began = time.monotonic()
    feed.start()
    pipeline = _ingest(settings)
    phases: dict[str, Any] = {"killed": None, "restarted": None, "compacted": None}
    compactor: threading.Thread | None = None
    seen_snapshots: set[int | None] = set()
    stats = {"queries": 0, "with_tail": 0, "mixed": 0, "while_down": 0, "after_compaction": 0, "extra": 0,
             "spill_tail": 0}  # fmt: skip
    try:
        while True:
            now = time.monotonic() - began
            # feed (capped) until the answers covered every case the asserts below count: an answer
            # with history and a tail needs a running feed, and when the first commits land depends
            # on the machine (a fast one keeps the tail short, a loaded one commits late)
            enough = (
                stats["after_compaction"] >= 5
                and stats["queries"] >= 100
                and stats["mixed"] >= 20
                and len(seen_snapshots) >= 8
            )
            if now > FEED_S and (enough or now > FEED_CAP_S):
                stop.set()
            if not feed.is_alive() and now > FEED_S + 2:
                break
            if phases["killed"] is None and now > 7:
                pipeline.send_signal(signal.SIGKILL)
                pipeline.wait(30)
                phases["killed"] = now
            if phases["killed"] is not None and phases["restarted"] is None and now > 10:
                pipeline = _ingest(settings, **SHEDDING)
                phases["restarted"] = now
            if phases["restarted"] is not None and compactor is None and now > 15:
                tables = [catalog.load_table(f"{settings.lake.namespace}.{k}") for k in ("trades", "quotes")]
                compactor = threading.Thread(target=_compact_all, args=(tables,), daemon=True)
                compactor.start()
            if compactor is not None and phases["compacted"] is None and not compactor.is_alive():
                phases["compacted"] = now
            kind = "trades" if stats["queries"] % 2 == 0 else "quotes"
            symbols = tuple(sorted(rng.sample(names, rng.choice((1, 1, 2)))))
            result = hybrid.ticks(kind, symbols, ALL_TIME)  # type: ignore[arg-type]
            extra = _check(result, recorder, kind, symbols)
            spill_read = any(
                ".spill." in t and part.end > part.start for (t, _), part in result.tail.parts.items()
            )
            spill_committed = any(".spill." in t for (t, _) in result.boundary.offsets)
            assert not extra or spill_read or spill_committed, "ticks beyond the covered offsets"
            stats["extra"] += len(extra)
            stats["spill_tail"] += spill_read
            stats["queries"] += 1
            stats["with_tail"] += result.tail_rows > 0
            stats["mixed"] += result.tail_rows > 0 and result.history_rows > 0
            stats["while_down"] += phases["killed"] is not None and phases["restarted"] is None
            stats["after_compaction"] += phases["compacted"] is not None
            seen_snapshots.add(result.boundary.snapshot_id)
            time.sleep(0.05)
        producer.flush()
        # Once the pipeline has caught up (spill included), Iceberg alone holds the whole stream.
        deadline = time.monotonic() + 120  # a longer feed (FEED_CAP_S) leaves more to catch up
        while True:
            result = hybrid.ticks("trades", tuple(names), ALL_TIME)
            _check(result, recorder, "trades", tuple(names))
            if result.tail_rows == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert result.tail_rows == 0 and result.history_rows == result.rows.height
        backfilled = any(".spill." in t for (t, _) in result.boundary.offsets)
        assert (
            len(recorder.expected("trades", tuple(names), {p: 10**12 for p in range(4)}))
            == result.rows.height
        )
    finally:
        stop.set()
        pipeline.send_signal(signal.SIGTERM)
        try:
            pipeline.wait(30)
        except subprocess.TimeoutExpired:
            pipeline.kill()
        hybrid.close()
        producer.close()
        engine.close()
    print("hybrid correctness:", stats, phases, f"{len(seen_snapshots)} snapshots")
    assert stats["queries"] >= 100
    assert stats["with_tail"] >= 20 and stats["mixed"] >= 20
    assert stats["while_down"] >= 3 and stats["after_compaction"] >= 3
    assert len(seen_snapshots) >= 8
    # answers read deferred ticks from the spill topics, until the back-fill committed them
    assert stats["spill_tail"] >= 3 and backfilled
    assert hybrid.router.exact  # the tail read one partition per symbol all along


# -- the edges: API routes, the live stream and the CLI, on the real broker --------------------------


def _app(settings: Settings) -> FastAPI:
    app = create_app(
        settings.model_copy(update={"api": settings.api.model_copy(update={"rate_limit_per_minute": 10**6})})
    )
    app.include_router(recent_routes.router, prefix="/v1")
    return app


def _send_trades(producer: TickProducer, feed: Iterator[Delivery], batches: int) -> pl.DataFrame:
    frames = []
    for _ in range(batches):
        delivery = next(feed)
        producer.send("trades", delivery.trades)
        frames.append(delivery.trades)
    producer.flush()
    return pl.concat(frames)


def _events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    event = None
    for line in lines:
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event is not None:
            yield event, line[6:]


def test_routes_stream_and_cli_show_uncommitted_ticks(lake: Settings) -> None:
    """Nothing committed yet: /recent, /bars/live, /stream and the CLI answer from the tail alone."""
    settings = lake
    names = symbol_names(3, 9)
    sim = Simulator(SimulatorConfig(MarketConfig(symbols=names, chunk_ticks=500), seed=9), keep_truth=False)
    producer = TickProducer(settings.kafka)
    feed = sim.deliveries()
    sent = _send_trades(producer, feed, 3)
    symbol = names[0]
    mine = sent.filter(pl.col("symbol") == symbol)
    app = _app(settings)
    try:
        with TestClient(app) as client:
            body = client.get("/v1/trades/recent", params={"symbol": symbol, "minutes": 1440}).json()
            assert body["count"] == mine.height == body["tail_rows"] and body["history_rows"] == 0
            assert body["snapshot_id"] is None and body["truncated"] is False
            assert {r["message_id"] for r in body["data"]} == set(mine["message_id"])
            assert all(r["committed"] is False for r in body["data"])
            assert [t["start"] for t in body["tail"]] == [0] * len(body["tail"])

            bars = client.get(
                "/v1/bars/live", params={"symbol": symbol, "minutes": 1440, "interval": "1m"}
            ).json()
            assert sum(b["trades"] for b in bars["data"]) == mine.height
            assert all(b["uncommitted"] == b["trades"] for b in bars["data"])

            later = _send_later(producer, feed, delay_s=1.0)
            with client.stream("GET", "/v1/stream", params={"symbols": ",".join(names), "kinds": "trades",
                                                           "duration": 4}) as response:  # fmt: skip
                assert response.headers["content-type"].startswith("text/event-stream")
                events = list(_events(response.iter_lines()))
            later.join()
        assert events[0][0] == "status"
        streamed = [json.loads(d)["message_id"] for e, d in events if e == "trade"]
        assert sorted(streamed) == sorted(later.frame["message_id"].to_list())  # type: ignore[attr-defined]
        assert any(e == "bar" for e, _ in events)
    finally:
        recent_routes.close_hybrid(app)

    runner = CliRunner()
    cli = _cli(settings)
    out = runner.invoke(cli, ["recent", symbol, "--minutes", "1440"])
    assert out.exit_code == 0, out.output
    everything = pl.concat([sent, later.frame]).filter(pl.col("symbol") == symbol)
    assert f"{everything.height:,} from the Kafka tail" in out.output.replace("\n", " ")
    watched = runner.invoke(cli, ["watch", symbol, "--kinds", "trades", "--duration", "1.5"])
    assert watched.exit_code == 0, watched.output
    assert f"watching {symbol}" in watched.output
    producer.close()


class _Later(threading.Thread):
    frame: pl.DataFrame


def _send_later(producer: TickProducer, feed: Iterator[Delivery], *, delay_s: float) -> _Later:
    def run() -> None:
        time.sleep(delay_s)
        thread.frame = _send_trades(producer, feed, 1)

    thread = _Later(target=run, daemon=True)
    thread.start()
    return thread


def _cli(settings: Settings) -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def root(ctx: typer.Context) -> None:
        ctx.obj = Context(settings=settings, console=Console(width=200), err=Console(stderr=True))

    app.command("recent")(recent_cmd.recent)
    app.command("watch")(recent_cmd.watch)
    return app
