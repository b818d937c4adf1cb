"""Kafka and Redis for the chaos runs, driven through the ``k2 services`` CLI like an operator would.

One pair of services serves every run of a matrix (a cold Kafka start costs ~5 s); runs keep apart
by unique topic prefixes, namespaces, groups and key prefixes. The scenarios that SIGKILL a service
find its pid through ``k2 services status --json`` and start it again with ``k2 services up``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Literal

import psutil

from k2.services.process import free_port, free_port_block

__all__ = ["ServiceName", "Services", "k2_command"]

ServiceName = Literal["kafka", "redis"]


def k2_command(*args: str) -> list[str]:
    """The ``k2`` CLI as a subprocess of this interpreter (the same venv and ``PYTHONPATH``)."""
    return [sys.executable, "-m", "k2.cli", *args]


def clean_environ() -> dict[str, str]:
    """The caller's environment without its own ``K2_*`` settings, which must not leak into runs."""
    return {k: v for k, v in os.environ.items() if not k.startswith("K2_")}


class Services:
    """The local broker and redis-server in a data directory of their own, on free ports."""

    def __init__(
        self, root: Path, *, ports: tuple[int, int, int] | None = None, heap: str = "512m", brokers: int = 1
    ) -> None:
        """Services kept in ``root`` on ``ports`` (Kafka, its controller, Redis; default: free ones).

        Given the data directory and ports of services already up (a test session's), the
        scenarios SIGKILL and restart those very services. ``brokers`` > 1 runs Kafka as a KRaft
        cluster of that many nodes (node i on port + 2i and controller_port + 2i).
        """
        self.root = root
        self.brokers = brokers
        if ports is None and brokers > 1:
            base = free_port_block(2 * brokers)
            ports = (base, base + 1, free_port())
        self.kafka_port, self.controller_port, self.redis_port = ports or (
            free_port(),
            free_port(),
            free_port(),
        )
        self.heap = heap

    def env(self) -> dict[str, str]:
        """What every ``k2`` process needs to find these services (a run adds its own names)."""
        return {
            **clean_environ(),
            "K2_KAFKA__PORT": str(self.kafka_port),
            "K2_KAFKA__CONTROLLER_PORT": str(self.controller_port),
            "K2_KAFKA__HEAP": self.heap,
            "K2_KAFKA__BROKERS": str(self.brokers),
            "K2_REDIS__PORT": str(self.redis_port),
            # the launcher's generated password lives beside the services, not in a run's data dir
            "K2_REDIS__PASSWORD_FILE": str(self.root / "services" / "redis" / "password"),
        }

    def _cli(self, *args: str, timeout_s: float = 180.0) -> subprocess.CompletedProcess[str]:
        env = {**self.env(), "K2_DATA_DIR": str(self.root), "K2_LOG__FORMAT": "json"}
        return subprocess.run(
            k2_command("services", *args), env=env, capture_output=True, text=True, timeout=timeout_s
        )

    def up(self, *names: ServiceName) -> None:
        """``k2 services up`` (harmless for a service already running).

        Raises:
            RuntimeError: the CLI failed; the message carries its output.
        """
        done = self._cli("up", *names, "--timeout", "120")
        if done.returncode != 0:
            raise RuntimeError(f"k2 services up {' '.join(names)} failed:\n{done.stdout}\n{done.stderr}")

    def down(self) -> None:
        self._cli("down")

    def pid(self, name: ServiceName) -> int | None:
        """The service's pid as ``k2 services status --json`` reports it (None: not running)."""
        done = self._cli("status", name, "--json", timeout_s=60.0)
        try:
            (status,) = json.loads(done.stdout)
        except (ValueError, TypeError):
            return None
        return status.get("pid") if status.get("state") == "running" else None

    def kafka_nodes(self) -> tuple[dict[int, int | None], int | None]:
        """A cluster's node pids (None: down) and its active controller, from ``k2 services status``."""
        done = self._cli("status", "kafka", "--json", timeout_s=60.0)
        try:
            (status,) = json.loads(done.stdout)
            nodes = {int(n): pid for n, pid in status.get("nodes", {}).items()}
            return nodes, status.get("controller")
        except (ValueError, TypeError, AttributeError):
            return {}, None

    def kill_node(self, node: int) -> int | None:
        """SIGKILL one node of the Kafka cluster; returns its pid (None: it was not running)."""
        pid = self.kafka_nodes()[0].get(node)
        if pid is not None:
            self._kill_pid(pid)
        return pid

    def kill(self, name: ServiceName) -> int | None:
        """SIGKILL the service (no shutdown of any kind) and wait until it is gone; returns its pid."""
        pid = self.pid(name)
        if pid is None:
            return None
        self._kill_pid(pid)
        return pid

    def _kill_pid(self, pid: int) -> None:
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:  # a killed child of a parent that is gone may stay a zombie here: that is gone too
                if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            time.sleep(0.05)
