"""A throwaway Kafka broker for a benchmark: K2's launcher, a temporary data directory, free ports."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from k2.config import Settings, load_settings
from k2.services import Launcher
from k2.services.process import free_port

__all__ = ["kafka_broker"]


@contextmanager
def kafka_broker(*, heap: str = "768m", partitions: int | None = None, **sections: Any) -> Iterator[Settings]:
    """Start Kafka (stopped on exit); ``sections`` are further settings, e.g. ``lake={...}``."""
    kafka: dict[str, Any] = {"port": free_port(), "controller_port": free_port(), "heap": heap}
    if partitions is not None:
        kafka["partitions"] = partitions
    with tempfile.TemporaryDirectory(prefix="k2-bench-") as tmp:
        settings = load_settings(data_dir=Path(tmp), kafka=kafka, redis={"port": free_port()}, **sections)
        launcher = Launcher(settings)
        print(f"starting Kafka on {settings.kafka.bootstrap} …", flush=True)
        launcher.up(["kafka"], timeout_s=120)
        try:
            yield settings
        finally:
            launcher.down(["kafka"])


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
