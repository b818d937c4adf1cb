"""Starts, stops and reports on K2's services, in dependency order."""

from __future__ import annotations

from collections.abc import Iterable

from k2.config import Settings
from k2.observability.logging import get_logger
from k2.services.base import Service, ServiceStatus
from k2.services.errors import ServiceError
from k2.services.kafka import KafkaService
from k2.services.postgres import PostgresService
from k2.services.process import tail
from k2.services.proxy import ProxyService
from k2.services.redis import RedisService
from k2.services.s3 import S3Service

__all__ = ["SERVICE_NAMES", "Launcher"]

#: In start order; `down` stops them in reverse, so the proxy goes first. The proxy is never a default.
SERVICE_NAMES = ("kafka", "redis", "postgres", "s3", "proxy")
log = get_logger(__name__)


class Launcher:
    """The services of one data directory."""

    def __init__(self, settings: Settings) -> None:
        self.services: dict[str, Service] = {
            "kafka": KafkaService(settings),
            "redis": RedisService(settings),
            "postgres": PostgresService(settings),
            "s3": S3Service(settings),
            "proxy": ProxyService(settings),
        }
        # Without names: Kafka and Redis, plus PostgreSQL when the catalog is on it (the SQLite default
        # needs no server) and S3 for a warehouse on s3:// (its first start builds it).
        defaults = ["kafka", "redis"]
        if settings.catalog_uri.startswith("postgres"):
            defaults.append("postgres")
        if settings.warehouse.startswith(("s3://", "s3a://", "s3n://")):
            defaults.append("s3")
        self.default_names: tuple[str, ...] = tuple(defaults)

    def _pick(self, names: Iterable[str] | None, *, everything: bool = False) -> list[Service]:
        chosen = list(names) if names else list(SERVICE_NAMES if everything else self.default_names)
        unknown = [n for n in chosen if n not in self.services]
        if unknown:
            raise ServiceError(
                f"unknown service {', '.join(unknown)}; choose from {', '.join(SERVICE_NAMES)}",
                service=unknown[0],
            )
        return [self.services[n] for n in chosen]

    def up(self, names: Iterable[str] | None = None, timeout_s: float = 90.0) -> list[ServiceStatus]:
        """Start what is not running; harmless when everything already is.

        Raises:
            ServiceError: a service could not be started (the message says why and what to do).
        """
        out = []
        for service in self._pick(names):
            if not service.managed:
                log.info("service external, not started", service=service.name, address=service.address)
            status = service.start(timeout_s)
            log.info("service up", service=service.name, address=status.address, pid=status.pid)
            out.append(status)
        return out

    def down(self, names: Iterable[str] | None = None) -> list[ServiceStatus]:
        """Stop the named services, by default every one this data directory may run (a
        PostgreSQL started by name is stopped too, whatever the catalog setting is now)."""
        return [service.stop(30.0) for service in reversed(self._pick(names, everything=True))]

    def status(self, names: Iterable[str] | None = None) -> list[ServiceStatus]:
        """The named services, by default the configured ones and any other whose process runs."""
        if names:
            return [service.status() for service in self._pick(names)]
        statuses = [service.status() for service in self._pick(None, everything=True)]
        return [s for s in statuses if s.name in self.default_names or s.pid is not None]

    def logs(self, name: str, lines: int = 50) -> str:
        (service,) = self._pick([name])
        if not service.managed:
            raise ServiceError(f"{name} is external: K2 keeps no log for it", service=name)
        return tail(service.log_path, lines)
