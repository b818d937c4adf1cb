"""Exactly-once effect on the real broker: SIGKILLs at random points, crash steps, a rebalance."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from k2 import schemas
from k2.config import Settings, load_settings
from k2.lake import open_catalog
from k2.pipeline.dlq import read_dead_letters, replay_dead_letters
from k2.stream.admin import ensure_topics
from k2.stream.producer import TickProducer
from tests.conftest import CONSUMERS
from tests.integration.truth_check import K2_WINDOW, assert_matches_truth, deliveries, publish, simulator

SYMBOLS = ("BHP", "RIO", "CBA", "NAB", "WBC", "ANZ", "CSL", "WES")


def make_trades(n: int, *, session: date = date(2024, 3, 11), seed: int = 7) -> pl.DataFrame:
    """n in-order trades over SYMBOLS with per-symbol sequences (the canonical frame)."""
    rng = random.Random(seed)
    t0 = datetime(2024, 3, 10, 23, 0, tzinfo=UTC)
    symbols = [SYMBOLS[rng.randrange(len(SYMBOLS))] for _ in range(n)]
    seq: dict[str, int] = {}
    sequences = []
    for s in symbols:
        seq[s] = seq.get(s, 0) + 1
        sequences.append(seq[s])
    frame = pl.DataFrame(
        {
            "message_id": [""] * n,
            "exchange": ["SIM"] * n,
            "symbol": symbols,
            "session": [session] * n,
            "sequence": sequences,
            "exchange_ts": [t0 + timedelta(milliseconds=10 * i) for i in range(n)],
            "ingest_ts": [t0 + timedelta(milliseconds=10 * i + 1) for i in range(n)],
            "price": [Decimal("40.000000") + Decimal(i % 100) / 100 for i in range(n)],
            "size": [Decimal(100 + i % 7) for i in range(n)],
            "trade_id": [f"T{i}" for i in range(n)],
            "qualifiers": [None] * n,
            "venue": ["X"] * n,
        },
        schema=schemas.frame_schema("trades"),
    )
    return frame.with_columns(message_id=schemas.message_ids("trades", frame))


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("K2_")}
    env.update(
        K2_DATA_DIR=str(settings.data_dir),
        K2_KAFKA__PORT=str(settings.kafka.port),
        K2_KAFKA__TOPIC_PREFIX=settings.kafka.topic_prefix,
        K2_KAFKA__PARTITIONS=str(settings.kafka.partitions),
        K2_REDIS__PORT=str(settings.redis.port),
        K2_REDIS__PASSWORD_FILE=str(settings.redis.password_file),
        K2_REDIS__KEY_PREFIX=settings.redis.key_prefix,
        K2_PIPELINE__GROUP_ID=settings.pipeline.group_id,
        K2_PIPELINE__CONSUMER=settings.pipeline.consumer,
        K2_STATE__BACKEND=settings.state.backend,
        K2_STATE__REORDER_WINDOW=str(settings.state.reorder_window),
        K2_LOG__FORMAT="json",
        K2_LAKE__NAMESPACE=settings.lake.namespace,
        **extra,
    )
    if settings.lake.catalog_uri is not None:  # the PostgreSQL catalog (tests' CATALOGS)
        env.setdefault("K2_LAKE__CATALOG_URI", settings.lake.catalog_uri.get_secret_value())
    return env


def _ingest(settings: Settings, *args: str, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "k2.cli", "ingest", *args],
        env=_env(settings, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _trades_table(settings: Settings) -> pl.DataFrame:
    table = open_catalog(settings).load_table(f"{settings.lake.namespace}.trades")
    return pl.from_arrow(table.scan().to_arrow())  # type: ignore[return-value]


def _produce(settings: Settings, frame: pl.DataFrame, *, bad: int = 0) -> None:
    ensure_topics(settings.kafka)
    producer = TickProducer(settings.kafka)
    producer.send("trades", frame)
    for i in range(bad):  # undecodable payloads: they must reach the DLQ, not block the stream
        producer.send_raw(settings.kafka.topic("trades"), b"BHP", b"\x00garbage" + bytes([i]))
    producer.close()


SMALL_COMMITS = {"K2_LAKE__COMMIT_ROWS": "1000", "K2_PIPELINE__BATCH_MAX_MESSAGES": "500"}
# Static membership: a restarted consumer takes its partitions back without waiting for the
# killed one's session to time out.
RESTARTS = {**SMALL_COMMITS, "K2_PIPELINE__INSTANCE_ID": "ingest-1"}


@CONSUMERS
def test_sigkill_at_random_points_loses_and_duplicates_nothing(settings: Settings, tmp_path: Path) -> None:
    """12 runs on the real Redis state store, each fed a new slice of a faulty simulated feed and
    killed at a random moment or at a named commit step; the result equals the feed's truth."""
    sim = simulator(60_000, chunk=5_000)
    slices = list(deliveries(sim))
    truth_file = tmp_path / "truth.json"
    sim.write_truth(truth_file)
    truth = json.loads(truth_file.read_text())
    invalid = make_trades(5, seed=9).with_columns(price=pl.lit(Decimal("-1"), dtype=pl.Decimal(18, 6)),
                                                  symbol=pl.lit("ZZZZ"))  # fmt: skip
    invalid = invalid.with_columns(message_id=schemas.message_ids("trades", invalid))
    _produce(settings, invalid, bad=7)

    rng = random.Random(42)
    crash_steps = ["dlq-flushed", "trades-committed", "gaps-committed", "state-committed"]
    kills = 0
    for i in range(12):
        publish(settings, slices[i * len(slices) // 12 : (i + 1) * len(slices) // 12])
        if i % 3 == 1:  # a crash at a named commit step, incl. between the Iceberg and the Kafka commit
            step = crash_steps[(i // 3) % 4]
            proc = _ingest(settings, "--idle-timeout", "5", "--crash-at", f"{step}:2", **RESTARTS)
            out = proc.communicate(timeout=120)[0].decode()
            assert proc.returncode == -signal.SIGKILL, f"{step}: {out[-2000:]}"
        else:
            proc = _ingest(settings, "--idle-timeout", "5", **RESTARTS)
            time.sleep(rng.uniform(1.5, 3.5))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait(60)
        kills += proc.returncode == -signal.SIGKILL
    assert kills >= 10
    final = _ingest(settings, "--idle-timeout", "4", K2_PIPELINE__INSTANCE_ID="ingest-1")
    out = final.communicate(timeout=300)[0].decode()
    assert final.returncode == 0, out[-3000:]

    trades = _trades_table(settings)
    sim_trades = trades.filter(pl.col("exchange") == "SIM")
    assert trades.height == sim_trades.height  # the invalid ticks were dead-lettered, not written
    assert trades.select(pl.struct("kafka_partition", "kafka_offset").n_unique()).item() == trades.height
    assert_matches_truth(settings, truth)  # every tick once, every gap and recovery exactly once
    letters = list(read_dead_letters(settings.kafka))
    sources = {lt.source for lt in letters}
    malformed = sum(truth["kinds"][k]["malformed"] for k in ("trades", "quotes"))
    assert len(sources) == 12 + malformed  # each bad message once (a replayed crash may resend one)
    assert "price must be > 0" in " ".join(lt.reason for lt in letters)


@CONSUMERS
def test_two_consumers_with_a_rebalance_write_the_same_table(settings: Settings, tmp_path: Path) -> None:
    sim = simulator(40_000, seed=3)
    publish(settings, deliveries(sim))
    truth_file = tmp_path / "truth.json"
    sim.write_truth(truth_file)
    first = _ingest(settings, "--idle-timeout", "6", K2_PIPELINE__INSTANCE_ID="a", **SMALL_COMMITS)
    time.sleep(4.0)  # let the first consumer commit some batches, then a second joins: a rebalance
    second = _ingest(settings, "--idle-timeout", "6", K2_PIPELINE__INSTANCE_ID="b", **SMALL_COMMITS)
    for proc in (first, second):
        out = proc.communicate(timeout=300)[0].decode()
        assert proc.returncode == 0, out[-3000:]
    assert_matches_truth(settings, json.loads(truth_file.read_text()))


def test_dead_letters_can_be_replayed(settings: Settings) -> None:
    _produce(settings, make_trades(100), bad=3)
    proc = _ingest(settings, "--idle-timeout", "3")
    out = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 0, out[-3000:]
    letters = list(read_dead_letters(settings.kafka))
    assert len(letters) == 3, out[-3000:]
    assert all(lt.source.startswith(f"topic={settings.kafka.topic('trades')}") for lt in letters)
    assert replay_dead_letters(settings.kafka).replayed == 3
    again = replay_dead_letters(settings.kafka)  # each letter once, across runs
    assert (again.replayed, again.pending) == (0, 0)
    proc = _ingest(settings, "--idle-timeout", "3")
    assert proc.wait(120) == 0
    assert len(list(read_dead_letters(settings.kafka))) == 6  # still bad: dead-lettered again


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Fewer partitions keep the subprocess runs quick; state on the real Redis."""
    return load_settings(
        **{
            **settings.model_dump(),
            "kafka": {**settings.kafka.model_dump(), "partitions": 3},
            "state": {"backend": "redis", "reorder_window": K2_WINDOW},
        }
    )


def test_a_corrupt_state_file_stops_ingest_with_a_clear_error(settings: Settings) -> None:
    """Damaged pages are found mid-run (the header still opens): a stop with a message, not a retry loop."""
    embedded = load_settings(**{**settings.model_dump(), "state": {"backend": "embedded"}})
    _produce(embedded, make_trades(200))
    first = _ingest(embedded, "--idle-timeout", "3")
    assert first.wait(120) == 0
    path = embedded.data_dir / "state" / embedded.lake.namespace / "state" / "sequence.sqlite"
    data = bytearray(path.read_bytes())
    assert len(data) > 8192, len(data)
    for offset in range(4096 + 16, len(data), 97):  # every page but the first: a disk's revenge
        data[offset] = 0xA5
    path.write_bytes(bytes(data))
    _produce(embedded, make_trades(50, seed=11))
    proc = _ingest(embedded, "--idle-timeout", "20")
    try:
        out = proc.communicate(timeout=90)[0].decode()
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("ingest kept retrying a corrupt state file") from None
    assert proc.returncode not in (0, None), out[-3000:]
    assert "is corrupt" in out and "sequence.sqlite" in out, out[-3000:]
