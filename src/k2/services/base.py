"""The contract every local service follows, and what its status looks like."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from k2.services.process import OwnedProcess

__all__ = ["ProcessService", "Service", "ServiceState", "ServiceStatus"]

ServiceState = Literal["running", "stopped", "stale", "unhealthy", "external", "unreachable"]


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    state: ServiceState
    address: str
    pid: int | None = None
    version: str | None = None
    detail: str = ""
    nodes: dict[int, int | None] = field(default_factory=dict)  # a cluster's node id -> pid (None: down)
    controller: int | None = None  # a cluster's active KRaft controller, when known

    @property
    def healthy(self) -> bool:
        return self.state in ("running", "external")


class Service(abc.ABC):
    """A service K2 can run locally, or merely reach when configured as external."""

    name: str

    @property
    @abc.abstractmethod
    def managed(self) -> bool:
        """False when configuration points at an external service: K2 then starts nothing."""

    @property
    @abc.abstractmethod
    def address(self) -> str: ...

    @property
    @abc.abstractmethod
    def log_path(self) -> Path: ...

    @abc.abstractmethod
    def start(self, timeout_s: float) -> ServiceStatus:
        """Start if not running (a second call is harmless) and wait until really ready.

        Raises:
            ServiceStartError: the process exited or did not become ready in time.
        """

    @abc.abstractmethod
    def stop(self, timeout_s: float) -> ServiceStatus:
        """Stop the process K2 started, found by its recorded pid; never by name."""

    @abc.abstractmethod
    def status(self) -> ServiceStatus: ...

    @abc.abstractmethod
    def ping(self) -> str:
        """A real request to the service; returns its version.

        Raises:
            Exception: whatever the client raised when the service does not answer.
        """


class ProcessService(Service):
    """A service K2 runs as one process it recorded (Redis, PostgreSQL, S3): the shared status."""

    _proc: OwnedProcess

    def status(self) -> ServiceStatus:
        if not self.managed:
            return self._probe("external")
        pid = self._proc.pid
        if pid is None:
            state: ServiceState = "stale" if self._proc.stale else "stopped"
            detail = f"pid file {self._proc.pid_file} names a dead process" if state == "stale" else ""
            return ServiceStatus(self.name, state, self.address, detail=detail)
        return self._probe("running", pid)

    def _probe(self, state: ServiceState, pid: int | None = None) -> ServiceStatus:
        try:
            version = self.ping()
        except Exception as exc:
            bad: ServiceState = "unreachable" if state == "external" else "unhealthy"
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            return ServiceStatus(self.name, bad, self.address, pid, None, reason)
        return ServiceStatus(self.name, state, self.address, pid, version, self._detail())

    def _detail(self) -> str:
        """What a healthy status adds (e.g. the bucket); nothing by default."""
        return ""
