"""Health checks of what the API depends on: the catalog, Kafka and the state store.

Each check runs in its own thread under a short deadline, all three at once, so a dead broker
costs the probe ``timeout_s`` and not a client-side hang. Status: ``ok``; ``degraded`` when Kafka
or the state store is down (history queries still work); ``down`` when the catalog is (no query
can run). Only the catalog makes the endpoint answer 503.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from pyiceberg.catalog import Catalog

from k2.config import Settings

__all__ = ["check_health"]

Check = Callable[[], dict[str, Any]]


def _catalog(settings: Settings, catalog: Callable[[], Catalog]) -> dict[str, Any]:
    tables = catalog().list_tables(settings.lake.namespace)
    return {"tables": sorted(".".join(t) for t in tables)}


def _kafka(settings: Settings, timeout_s: float) -> dict[str, Any]:
    from confluent_kafka.admin import AdminClient

    config: dict[str, str | int | float | bool] = {
        **settings.kafka.client,
        "bootstrap.servers": settings.kafka.bootstrap,
        "socket.timeout.ms": int(timeout_s * 1000),
        "socket.connection.setup.timeout.ms": int(timeout_s * 1000),
        "log_level": 0,  # a down broker is the answer here, not a stream of librdkafka errors
    }
    metadata = AdminClient(config).list_topics(timeout=timeout_s)
    return {"brokers": len(metadata.brokers), "topics": len(metadata.topics)}


def _state(settings: Settings, timeout_s: float) -> dict[str, Any]:
    if settings.state.backend != "redis":
        return {"backend": settings.state.backend}
    import redis

    client = redis.Redis.from_url(
        settings.redis.effective_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
    )
    try:
        client.ping()
    finally:
        client.close()
    return {"backend": "redis"}


def _run(pool: ThreadPoolExecutor, checks: dict[str, Check], timeout_s: float) -> dict[str, dict[str, Any]]:
    started = time.perf_counter()
    futures = {name: pool.submit(check) for name, check in checks.items()}
    results: dict[str, dict[str, Any]] = {}
    for name, future in futures.items():
        remaining = max(0.0, timeout_s + 0.5 - (time.perf_counter() - started))
        try:
            detail = future.result(timeout=remaining)
            results[name] = {"status": "ok", **detail}
        except FutureTimeout:
            results[name] = {"status": "down", "detail": f"no answer within {timeout_s:g} s"}
        except Exception as exc:
            results[name] = {"status": "down", "detail": f"{type(exc).__name__}: {str(exc)[:200]}"}
    return results


def check_health(
    settings: Settings, catalog: Callable[[], Catalog], *, timeout_s: float = 1.5
) -> tuple[int, dict[str, Any]]:
    """Run the checks; returns (HTTP status, body). ``catalog`` returns the (cached) catalog."""
    pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="k2-health")
    try:
        checks = _run(
            pool,
            {
                "catalog": lambda: _catalog(settings, catalog),
                "kafka": lambda: _kafka(settings, timeout_s),
                "state": lambda: _state(settings, timeout_s),
            },
            timeout_s,
        )
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    if checks["catalog"]["status"] != "ok":
        overall, code = "down", 503
    elif any(c["status"] != "ok" for c in checks.values()):
        overall, code = "degraded", 200
    else:
        overall, code = "ok", 200
    return code, {"status": overall, "checks": checks}
