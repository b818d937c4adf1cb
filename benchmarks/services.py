"""A throwaway Kafka broker for a benchmark: K2's launcher, a temporary data directory, free ports."""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from k2.config import Settings, load_settings
from k2.services import Launcher
from k2.services.process import free_port, free_port_block

__all__ = ["kafka_broker", "redis_server", "stop_process", "wait_served"]


@contextmanager
def kafka_broker(
    *, heap: str = "768m", partitions: int | None = None, brokers: int = 1, **sections: Any
) -> Iterator[Settings]:
    """Start Kafka (stopped on exit); ``sections`` are further settings, e.g. ``lake={...}``.

    ``brokers`` > 1 is a KRaft cluster on this machine (replication min(3, brokers), acks=all).
    """
    if brokers > 1:
        base = free_port_block(2 * brokers)
        kafka: dict[str, Any] = {"port": base, "controller_port": base + 1, "heap": heap, "brokers": brokers}
    else:
        kafka = {"port": free_port(), "controller_port": free_port(), "heap": heap}
    if partitions is not None:
        kafka["partitions"] = partitions
    with tempfile.TemporaryDirectory(prefix="k2-bench-") as tmp:
        settings = load_settings(data_dir=Path(tmp), kafka=kafka, redis={"port": free_port()}, **sections)
        launcher = Launcher(settings)
        print(f"starting Kafka ({brokers} node(s)) on {settings.kafka.bootstrap} …", flush=True)
        launcher.up(["kafka"], timeout_s=120 * brokers)
        try:
            yield settings
        finally:
            launcher.down(["kafka"])


@contextmanager
def redis_server(settings: Settings, timeout_s: float = 60.0) -> Iterator[Settings]:
    """Start the Redis that ``settings`` name (stopped on exit), through K2's launcher."""
    launcher = Launcher(settings)
    launcher.up(["redis"], timeout_s=timeout_s)
    try:
        yield settings
    finally:
        launcher.down(["redis"])


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int:
    """SIGTERM a server the benchmark started, SIGKILL it after ``timeout_s``; its exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def wait_served(
    url: str,
    process: subprocess.Popen[bytes],
    log: Path,
    *,
    path: str = "/ready",
    ok: tuple[int, ...] = (200,),
    timeout_s: float = 120.0,
    client: httpx.Client | None = None,
) -> None:
    """Wait until a ``k2 serve`` subprocess answers ``path`` with one of ``ok``.

    ``/ready`` (the default) waits for the warm-up too; ``/health`` only for the socket.

    Raises:
        RuntimeError: the process exited (its log's tail is in the message), or ``timeout_s`` passed.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"k2 serve exited with {process.returncode} (log {log}):\n{tail}")
        try:
            answer = client.get(path) if client is not None else httpx.get(f"{url}{path}", timeout=2)
            if answer.status_code in ok:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"k2 serve did not answer {path} on {url} within {timeout_s:.0f} s (log {log})"
            )
        time.sleep(0.02)
