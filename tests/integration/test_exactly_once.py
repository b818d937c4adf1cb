"""Every tick exactly once through a crash and a full re-send, on the real ASX sample.

Each test replays the five days of real ASX ticks into the real broker, breaks something while
``k2 ingest`` (a real process) commits, then sends the same five days again: every tick of the
second pass is a duplicate of the first, and days old by the time they come back. The tables must
hold each unique tick once. These reproduce what an outside run found: the state forgot what the
lake held (a re-sent session older than the previous one passed the sequence check, and the dedup
window, measured from the newest exchange time, had already dropped its ids).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from k2.config import Settings
from k2.feeds.asx import read_asx
from k2.feeds.delivery import QUOTE, TRADE, Delivery
from k2.lake import open_catalog
from k2.services import Launcher
from tests.conftest import CATALOGS, CONSUMERS
from tests.integration.test_pipeline import _ingest, _produce, make_trades
from tests.integration.truth_check import publish

DAYS = {date(2014, 3, d) for d in range(10, 15)}  # the sample's five trading days
SYMBOLS = {"BHP", "DVN", "MWR"}
KINDS = {TRADE: "trades", QUOTE: "quotes"}
COMMITS = {
    "K2_LAKE__COMMIT_ROWS": "5000",
    "K2_PIPELINE__BATCH_MAX_MESSAGES": "2000",
    "K2_PIPELINE__INSTANCE_ID": "ingest-1",  # static membership: a restart takes the partitions at once
}


@pytest.fixture(scope="module")
def replay(asx_data: Path) -> Delivery:
    """DVN and MWR whole, BHP's first 3,000 ticks of each day and kind (gap-free): ~31 K messages."""
    full = read_asx(asx_data, symbols=SYMBOLS, days=DAYS).delivery
    short = (pl.col("symbol") != "BHP") | (pl.col("sequence") <= 3_000)
    masks = {code: full.frame(kind).select(short).to_series().to_numpy() for code, kind in KINDS.items()}
    keep = np.ones(len(full), dtype=bool)
    for code, mask in masks.items():
        keep[full.order == code] = mask
    return Delivery(
        full.trades.filter(masks[TRADE]), full.quotes.filter(masks[QUOTE]), full.raw, full.order[keep]
    )


def _snapshots(settings: Settings) -> int:
    try:
        table = open_catalog(settings).load_table(f"{settings.lake.namespace}.trades")
    except Exception:  # not created yet
        return 0
    return len(table.snapshots())


def _assert_each_tick_once(settings: Settings, replay: Delivery) -> None:
    catalog = open_catalog(settings)
    for kind in ("trades", "quotes"):
        table = catalog.load_table(f"{settings.lake.namespace}.{kind}")
        rows = pl.from_arrow(table.scan(selected_fields=("message_id", "kafka_offset")).to_arrow())
        assert isinstance(rows, pl.DataFrame)
        want = set(replay.frame(kind)["message_id"].to_list())
        got = rows["message_id"]
        assert got.n_unique() == rows.height, f"{kind}: {rows.height - got.n_unique()} duplicates written"
        assert set(got.to_list()) == want, f"{kind}: {len(want - set(got.to_list()))} missing"


def _finish(proc: subprocess.Popen[bytes]) -> None:
    out = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, out[-3000:]


def _kill_and_restart(services: Settings, name: str, down_s: float) -> None:
    launcher = Launcher(services)
    (status,) = launcher.status([name])
    assert status.pid is not None, f"{name} is not running"
    os.kill(status.pid, signal.SIGKILL)
    time.sleep(down_s)
    launcher.up([name], timeout_s=120)


@CATALOGS
def test_sigkill_between_the_lake_and_the_state_commit_then_a_full_resend(
    settings: Settings, replay: Delivery
) -> None:
    """Embedded state: the ingester dies after an Iceberg commit, before its state commit (on the
    SQLite and the PostgreSQL catalog)."""
    publish(settings, [replay])
    first = _ingest(settings, "--idle-timeout", "5", "--crash-at", "trades-committed:3", **COMMITS)
    out = first.communicate(timeout=300)[0].decode()
    assert first.returncode == -signal.SIGKILL, out[-2000:]
    publish(settings, [replay])  # the same five days again: all duplicates
    _finish(_ingest(settings, "--idle-timeout", "5", **COMMITS))
    _assert_each_tick_once(settings, replay)


@CONSUMERS
@pytest.mark.parametrize("victim", ["kafka", "redis"])
def test_a_service_killed_mid_ingest_then_a_full_resend(
    settings: Settings, services: Settings, replay: Delivery, victim: str
) -> None:
    """Redis state: the broker (or redis-server, which may lose its last second of AOF) is SIGKILLed
    and restarted while the ingester commits; the ingester rides it out, then everything is re-sent."""
    redis = settings.model_copy(update={"state": settings.state.model_copy(update={"backend": "redis"})})
    publish(redis, [replay])
    proc = _ingest(redis, "--idle-timeout", "8", **COMMITS)
    deadline = time.monotonic() + 120
    while _snapshots(redis) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    _kill_and_restart(services, victim, down_s=3.0)
    _finish(proc)
    publish(redis, [replay])
    _finish(_ingest(redis, "--idle-timeout", "5", **COMMITS))
    _assert_each_tick_once(redis, replay)


def test_a_clean_stop_moves_every_watermark_so_a_restart_reads_nothing_again(settings: Settings) -> None:
    """The gap table commits an empty checkpoint only every 30 s; a clean stop must still move its
    watermark, or every restart re-reads (and re-judges) all that the run before it had read."""
    _produce(settings, make_trades(3_000))
    for expected in ("read 3,000", "read 0"):
        proc = _ingest(settings, "--idle-timeout", "3")
        out = proc.communicate(timeout=120)[0].decode()
        assert proc.returncode == 0, out[-3000:]
        assert expected in out, [line for line in out.splitlines() if "stopped" in line or "assigned" in line]
