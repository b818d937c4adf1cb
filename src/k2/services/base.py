"""The contract every local service follows, and what its status looks like."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = ["Service", "ServiceState", "ServiceStatus"]

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
