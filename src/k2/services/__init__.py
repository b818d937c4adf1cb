"""The local Kafka, Redis and PostgreSQL that the demo, development and the tests use."""

from __future__ import annotations

from k2.services.base import Service, ServiceStatus
from k2.services.launcher import Launcher

__all__ = ["Launcher", "Service", "ServiceStatus"]
