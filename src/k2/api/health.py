"""Health checks of what the API depends on: the catalog, Kafka and the state store.

One ``HealthMonitor`` per app holds one Kafka admin client, one Redis client and three worker
threads for the life of the app, and answers from a result at most ``api.health_cache_s`` old:
a client per call leaked librdkafka threads (sixty probe loops once drove the server to ~400
threads). Concurrent callers of a stale answer share one refresh. Each check runs under a short
deadline, all three at once, so a dead broker costs the probe ``timeout_s`` and not a hang.

The ``hybrid`` check names the hybrid settings served (fingerprint, local or the replica group's)
and says ``stale`` when the group's changed since this replica started (``k2.api.hybrid_group``).

Status: ``ok``; ``degraded`` when Kafka or the state store is down (history queries still work),
or the hybrid settings are stale or cannot be compared with the group's;
``down`` when the catalog is (no query can run). Only the catalog makes the endpoint answer 503.
The details (table names, error text) are for callers with a key: ``public`` strips them.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from pyiceberg.catalog import Catalog

from k2.config import Settings
from k2.observability.logging import get_logger

__all__ = ["HealthMonitor", "public"]

log = get_logger("k2.api.health")

Check = Callable[[], dict[str, Any]]
Answer = tuple[int, dict[str, Any]]


def public(answer: Answer) -> Answer:
    """The answer for anonymous callers: the overall status only."""
    status, body = answer
    return status, {"status": body["status"]}


class HealthMonitor:
    """Cached, single-flight health checks over long-lived clients (thread- and task-safe)."""

    def __init__(
        self,
        settings: Settings,
        catalog: Callable[[], Catalog],
        *,
        timeout_s: float = 1.5,
        cache_s: float | None = None,
        hybrid: Check | None = None,
    ) -> None:
        self._settings = settings
        self._catalog = catalog
        self._hybrid = hybrid
        self.timeout_s = timeout_s
        self.cache_s = settings.api.health_cache_s if cache_s is None else cache_s
        self._pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="k2-health")
        self._clients_lock = threading.Lock()
        self._admin: Any = None
        self._redis: Any = None
        self._answer: Answer | None = None
        self._at = 0.0
        self._inflight: asyncio.Future[Answer] | None = None
        self._closed = False
        self.refreshes = 0  # how many times the checks really ran (tests, metrics)

    async def answer(self) -> Answer:
        """The (HTTP status, body) of a fresh-enough check; at most one check runs at a time."""
        if self._answer is not None and time.monotonic() - self._at < self.cache_s:
            return self._answer
        if self._inflight is None or self._inflight.done():
            loop = asyncio.get_running_loop()
            self._inflight = asyncio.ensure_future(loop.run_in_executor(None, self._refresh))
        return await asyncio.shield(self._inflight)

    def close(self) -> None:
        """Stop the workers and drop the clients (from the app's lifespan)."""
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._clients_lock:
            if self._redis is not None:
                self._redis.close()
            self._admin = self._redis = None

    def _refresh(self) -> Answer:
        checks = self._run(
            {"catalog": self._check_catalog, "kafka": self._check_kafka, "state": self._check_state}
        )
        if self._hybrid is not None:  # in memory (the watch reads Redis): no worker, no deadline
            checks["hybrid"] = {"status": "ok", **self._hybrid()}
        if checks["catalog"]["status"] != "ok":
            overall, code = "down", 503
        elif any(c["status"] != "ok" for c in checks.values()):
            overall, code = "degraded", 200
        else:
            overall, code = "ok", 200
        answer = code, {"status": overall, "checks": checks}
        self._answer, self._at = answer, time.monotonic()
        self.refreshes += 1
        return answer

    def _run(self, checks: dict[str, Check]) -> dict[str, dict[str, Any]]:
        started = time.perf_counter()
        futures = {name: self._pool.submit(check) for name, check in checks.items()}
        results: dict[str, dict[str, Any]] = {}
        for name, future in futures.items():
            remaining = max(0.0, self.timeout_s + 0.5 - (time.perf_counter() - started))
            try:
                detail = future.result(timeout=remaining)
                results[name] = {"status": "ok", **detail}
            except FutureTimeout:
                results[name] = {"status": "down", "detail": f"no answer within {self.timeout_s:g} s"}
            except Exception as exc:
                results[name] = {"status": "down", "detail": f"{type(exc).__name__}: {str(exc)[:200]}"}
        return results

    def _check_catalog(self) -> dict[str, Any]:
        tables = self._catalog().list_tables(self._settings.lake.namespace)
        return {"tables": sorted(".".join(t) for t in tables)}

    def _check_kafka(self) -> dict[str, Any]:
        metadata = self._admin_client().list_topics(timeout=self.timeout_s)
        return {"brokers": len(metadata.brokers), "topics": len(metadata.topics)}

    def _check_state(self) -> dict[str, Any]:
        if self._settings.state.backend != "redis":
            return {"backend": self._settings.state.backend}
        self._redis_client().ping()
        return {"backend": "redis"}

    def _admin_client(self) -> Any:
        with self._clients_lock:
            if self._admin is None:
                from confluent_kafka.admin import AdminClient

                kafka = self._settings.kafka
                timeout_ms = int(self.timeout_s * 1000)
                self._admin = AdminClient({
                    **kafka.client,
                    "bootstrap.servers": kafka.bootstrap,
                    "socket.timeout.ms": timeout_ms,
                    "socket.connection.setup.timeout.ms": timeout_ms,
                    "log_level": 0,  # a down broker is the answer here, not a stream of librdkafka errors
                })  # fmt: skip
            return self._admin

    def _redis_client(self) -> Any:
        with self._clients_lock:
            if self._redis is None:
                import redis

                self._redis = redis.Redis.from_url(
                    self._settings.redis.effective_url,
                    socket_timeout=self.timeout_s,
                    socket_connect_timeout=self.timeout_s,
                    max_connections=2,
                )
            return self._redis
