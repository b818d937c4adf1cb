"""/health: one cached check behind long-lived clients; details only for callers with a key."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
from fastapi.testclient import TestClient

from k2.api.deps import Services
from tests.unit.api.conftest import LiveServer


def test_anonymous_callers_learn_the_status_only(make_client: Callable[..., TestClient]) -> None:
    client = make_client(host="0.0.0.0", api_keys=["k"])
    anonymous = client.get("/health")
    assert anonymous.status_code == 200 and set(anonymous.json()) == {"status"}
    assert anonymous.json()["status"] in ("ok", "degraded")
    wrong = client.get("/health", headers={"X-API-Key": "nope"})
    assert set(wrong.json()) == {"status"}
    keyed = client.get("/health", headers={"X-API-Key": "k"}).json()
    assert (
        keyed["checks"]["catalog"]["status"] == "ok" and "k2.trades" in keyed["checks"]["catalog"]["tables"]
    )


def test_concurrent_probes_share_one_check(make_server: Callable[..., LiveServer]) -> None:
    live = make_server(health_cache_s=30, ops_rate_limit_per_minute=10_000)
    with httpx.Client(base_url=live.url, timeout=10) as http, ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(lambda _: http.get("/health").status_code, range(60)))
    assert set(codes) == {200}
    svc = live.app.state.k2
    assert isinstance(svc, Services) and svc.health().refreshes == 1


def test_probes_do_not_grow_the_thread_count(make_server: Callable[..., LiveServer]) -> None:
    # A new Kafka admin client (and its librdkafka threads) per probe once took the server to ~400
    # threads; now one client serves every probe.
    live = make_server(health_cache_s=0, ops_rate_limit_per_minute=10_000)
    process = psutil.Process()
    with httpx.Client(base_url=live.url, timeout=10) as http:
        http.get("/health")
        before = process.num_threads()
        for _ in range(6):
            assert http.get("/health").status_code == 200
        after = process.num_threads()
    assert after <= before + 2, (before, after)


def test_probes_are_rate_limited_per_client(make_client: Callable[..., TestClient]) -> None:
    client = make_client(ops_rate_limit_per_minute=3)
    codes = [client.get("/health").status_code for _ in range(3)] + [client.get("/metrics").status_code]
    assert codes[:3] == [200, 200, 200] and codes[3] == 429


def test_the_cache_expires() -> None:
    from k2.api.health import HealthMonitor
    from k2.config import load_settings

    class _Catalog:
        def list_tables(self, namespace: str) -> list[tuple[str, str]]:
            return [(namespace, "trades")]

    monitor = HealthMonitor(
        load_settings(kafka={"bootstrap_servers": "127.0.0.1:1"}), lambda: _Catalog(),  # type: ignore[arg-type,return-value]
        timeout_s=0.2, cache_s=0.3,
    )  # fmt: skip
    try:
        first = asyncio.run(monitor.answer())
        assert first[1]["status"] == "degraded" and monitor.refreshes == 1
        asyncio.run(monitor.answer())
        assert monitor.refreshes == 1
        time.sleep(0.35)
        asyncio.run(monitor.answer())
        assert monitor.refreshes == 2
    finally:
        monitor.close()
