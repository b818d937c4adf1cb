"""Width end to end: real ``k2 ingest`` processes over a Zipf feed of N symbols, both backends.

Per symbol count, ``k2 feed simulate --liquidity zipf`` puts the feed on a 4-partition topic once;
then per backend, with its own lake, group and state:

1. **Throughput with checks on.** One ``k2 ingest`` reads everything; ticks/s is measured from the
   first committed row to the last (as ``bench_scaleout`` does).
2. **Rebuild after a SIGKILL.** A second ingester on a fresh lake and state is killed
   (``--crash-at gaps-committed:4``, a real SIGKILL) after the 4th checkpoint's tick and gap
   commits and before its state's, so the restart must rebuild the state from the committed range
   (not ``trades-committed``: that step can fall on a checkpoint without trades, the feed's trades
   being read first); the restarted ingester's own log line ("sequence state rebuilt") gives the
   seconds and the messages read again.

Each run ends with an exactness check: every tick sent is in the tables exactly once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import polars as pl

from k2.config import Settings, load_settings
from k2.lake import open_catalog
from k2.services import Launcher
from k2.services.process import free_port

__all__ = ["run_width_e2e"]

PARTITIONS = 4


def _env(settings: Settings, run: str, backend: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("K2_")}
    env.update(
        K2_DATA_DIR=str(settings.data_dir / run),
        K2_KAFKA__PORT=str(settings.kafka.port),
        K2_KAFKA__CONTROLLER_PORT=str(settings.kafka.controller_port),
        K2_KAFKA__TOPIC_PREFIX=settings.kafka.topic_prefix,
        K2_KAFKA__PARTITIONS=str(PARTITIONS),
        K2_REDIS__PORT=str(settings.redis.port),
        K2_REDIS__PASSWORD_FILE=str(settings.redis.password_file),
        K2_REDIS__KEY_PREFIX=f"{run}:",
        K2_STATE__BACKEND=backend,
        K2_PIPELINE__GROUP_ID=run,
        K2_PIPELINE__INSTANCE_ID=f"{run}-1",  # static membership: the restart takes its partitions at once
        K2_RESILIENCE__ENABLED="false",  # the checks' own cost, not the governor's reaction to it
        K2_LOG__FORMAT="json",
        **extra,
    )
    return env


def _ingest(settings: Settings, run: str, backend: str, *args: str, **extra: str) -> subprocess.Popen[bytes]:
    """A ``k2 ingest`` logging to ``<data_dir>/<run>.log`` (a pipe nobody drains would block it)."""
    with (settings.data_dir / f"{run}.log").open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "k2.cli", "ingest", *args],
            env=_env(settings, run, backend, **extra),
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _log(settings: Settings, run: str) -> str:
    return (settings.data_dir / f"{run}.log").read_text(errors="replace")


def _tables(settings: Settings, run: str) -> Any:
    return open_catalog(load_settings(data_dir=settings.data_dir / run))


def _committed(settings: Settings, run: str) -> int:
    try:
        catalog = _tables(settings, run)
        total = 0
        for kind in ("trades", "quotes"):
            snap = catalog.load_table(f"k2.{kind}").current_snapshot()
            total += int(snap.summary.get("total-records", 0)) if snap and snap.summary else 0
        return total
    except Exception:
        return 0


def _exact(settings: Settings, run: str, sent: int) -> None:
    catalog = _tables(settings, run)
    ids: list[pl.Series] = []
    for kind in ("trades", "quotes"):
        arrow = catalog.load_table(f"k2.{kind}").scan(selected_fields=("message_id",)).to_arrow()
        ids.append(pl.Series(arrow.column("message_id").combine_chunks()))
    every = pl.concat(ids)
    unique = every.n_unique()
    if every.len() != sent or unique != sent:
        raise AssertionError(f"{run}: {every.len():,} rows, {unique:,} unique, {sent:,} sent")


def _feed(settings: Settings, symbols: int, count: int) -> int:
    """The Zipf feed (0.1 % of ticks start a gap), once per symbol count; returns the ticks sent."""
    env = _env(settings, "feed", "embedded")
    out = subprocess.run(
        [sys.executable, "-m", "k2.cli", "feed", "simulate", "--symbols", str(symbols), "--count", str(count),
         "--seed", "7", "--liquidity", "zipf", "--gap-rate", "0.001", "--tick-rate", "0.5", "--json"],
        env=env, capture_output=True, timeout=3600, check=False,
    )  # fmt: skip
    if out.returncode:
        raise RuntimeError(f"k2 feed simulate failed: {out.stderr.decode()[-2000:]}")
    text = out.stdout.decode()
    summary = json.loads(text[text.index("{") :])
    return int(summary["trades"]) + int(summary["quotes"])


def _throughput(settings: Settings, run: str, backend: str, sent: int) -> float:
    """Ticks/s from the first commit to the last (the first one's rows and the process's start
    excluded), with the default commit policy (200,000 rows or 1 s): the same at every width."""
    proc = _ingest(settings, run, backend, "--idle-timeout", "8")
    began, first, done, base = time.perf_counter(), 0.0, 0, 0
    try:
        while done < sent:
            if proc.poll() is not None or time.perf_counter() - began > 3600:
                raise RuntimeError(
                    f"{run}: ingest stopped at {done:,} of {sent:,}: {_log(settings, run)[-2000:]}"
                )
            time.sleep(0.1)
            done = _committed(settings, run)
            if done and not base:
                first, base = time.perf_counter(), done
        last = time.perf_counter()
    finally:
        proc.wait(timeout=120)
    _exact(settings, run, sent)
    return (sent - base) / (last - first) if last > first and sent > base else float("nan")


def _rebuild(settings: Settings, run: str, backend: str, sent: int) -> tuple[float, int]:
    small = {  # about ten checkpoints over the feed, so the 4th lands mid-way
        "K2_LAKE__COMMIT_ROWS": str(max(1_000, sent // 10)),
        "K2_PIPELINE__BATCH_MAX_MESSAGES": str(max(500, sent // 40)),
    }
    crash = ("--crash-at", "gaps-committed:4", "--idle-timeout", "8")
    first = _ingest(settings, run, backend, *crash, **small)
    if first.wait(timeout=3600) != -9:
        raise RuntimeError(
            f"{run}: expected a SIGKILL at the 4th checkpoint's gap commit: {_log(settings, run)[-2000:]}"
        )
    killed = len(_log(settings, run))
    again = _ingest(settings, run, backend, "--idle-timeout", "8", **small)
    if again.wait(timeout=3600):
        raise RuntimeError(f"{run}: the restart failed: {_log(settings, run)[-2000:]}")
    out = _log(settings, run)[killed:]
    _exact(settings, run, sent)
    lines = [json.loads(line) for line in out.splitlines() if "sequence state rebuilt" in line]
    if not lines:
        raise RuntimeError(f"{run}: the restart rebuilt nothing (no 'sequence state rebuilt' line)")
    return float(lines[0]["seconds"]), int(lines[0]["messages"])


def run_width_e2e(sizes: list[tuple[int, int]], base: Path) -> dict[str, dict[str, float]]:
    """Per '<backend>_<symbols>': ticks/s through ``k2 ingest`` and the rebuild's seconds and size."""
    settings = load_settings(
        data_dir=base,
        kafka={"port": free_port(), "controller_port": free_port(), "heap": "768m", "partitions": PARTITIONS},
        redis={"port": free_port()},
    )
    launcher = Launcher(settings)
    print(f"starting Kafka and Redis in {base} …", flush=True)
    launcher.up(["kafka", "redis"], timeout_s=180)
    out: dict[str, dict[str, float]] = {}
    try:
        for symbols, count in sizes:
            topics = settings.model_copy(
                update={"kafka": settings.kafka.model_copy(update={"topic_prefix": f"w{symbols}."})}
            )
            began = time.perf_counter()
            sent = _feed(topics, symbols, count)
            print(
                f"  {symbols:>9,} symbols: {sent:,} ticks fed in {time.perf_counter() - began:.0f} s",
                flush=True,
            )
            for backend in ("embedded", "redis"):
                tag = uuid.uuid4().hex[:6]
                rate = _throughput(topics, f"t{symbols}{backend[0]}{tag}", backend, sent)
                seconds, replayed = _rebuild(topics, f"r{symbols}{backend[0]}{tag}", backend, sent)
                out[f"{backend}_{symbols}"] = {
                    "ticks": sent, "ticks_per_s": rate, "rebuild_s": seconds, "rebuild_messages": replayed,
                }  # fmt: skip
                print(f"  {symbols:>9,} {backend:9} {rate:>10,.0f} ticks/s  rebuild {seconds:.2f} s "
                      f"({replayed:,} messages read again), exact", flush=True)  # fmt: skip
    finally:
        launcher.down(["kafka", "redis"])
    return out
