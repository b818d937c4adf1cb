"""The API over real sockets, with the session's real Kafka and Redis behind /health."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import date

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from k2.api import create_app
from k2.config import Settings, load_settings
from k2.lake import ensure_tables, open_catalog
from k2.services.process import free_port as _free_port
from k2.stream.admin import ensure_topics
from tests.unit.query.lakedata import append_commits, asx_frames

DAY = (date(2014, 3, 12),)


@pytest.fixture
def lake_settings(settings: Settings) -> Settings:
    """The test's settings with one ASX day in its own catalog, the state store on Redis, a key."""
    catalog = open_catalog(settings)
    tables = ensure_tables(catalog, settings.lake.namespace)
    frames = asx_frames(DAY)
    for kind in ("trades", "quotes"):
        append_commits(tables[kind], frames[kind], 2)
    data = settings.model_dump()
    data["state"]["backend"] = "redis"
    data["api"] = {**data["api"], "port": _free_port(), "api_keys": ["integration-key"]}
    return load_settings(
        **{k: v for k, v in data.items() if k in ("data_dir", "kafka", "redis", "lake", "state", "api")}
    )


@pytest.fixture
def server(lake_settings: Settings) -> Iterator[str]:
    config = uvicorn.Config(create_app(lake_settings), host="127.0.0.1", port=lake_settings.api.port,
                            log_config=None, access_log=False)  # fmt: skip
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{lake_settings.api.port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


def test_health_sees_the_real_services(lake_settings: Settings) -> None:
    client = TestClient(create_app(lake_settings))
    assert client.get("/health").json() == {"status": "ok"}  # anonymous: the status only
    body = client.get("/health", headers={"X-API-Key": "integration-key"}).json()
    assert body["status"] == "ok", body
    assert body["checks"]["kafka"]["status"] == "ok" and body["checks"]["kafka"]["brokers"] == 1
    assert body["checks"]["state"] == {"status": "ok", "backend": "redis"}
    assert "k2.trades" in body["checks"]["catalog"]["tables"]


def test_health_reports_a_dead_broker_as_degraded(lake_settings: Settings) -> None:
    data = lake_settings.model_dump()
    data["kafka"]["bootstrap_servers"] = f"127.0.0.1:{_free_port()}"
    data["api"]["api_keys"] = ["k"]
    broken = load_settings(
        **{k: v for k, v in data.items() if k in ("data_dir", "kafka", "redis", "lake", "state", "api")}
    )
    started = time.perf_counter()
    body = TestClient(create_app(broken)).get("/health", headers={"X-API-Key": "k"}).json()
    assert body["status"] == "degraded" and body["checks"]["kafka"]["status"] == "down"
    assert time.perf_counter() - started < 5  # short timeouts, not a hang


def test_queries_over_a_real_socket_with_a_key(server: str) -> None:
    params = {
        "symbols": "BHP",
        "start": "2014-03-11T13:00:00Z",
        "end": "2014-03-12T13:00:00Z",
        "interval": "1h",
    }
    with httpx.Client(base_url=server, timeout=30) as http:
        assert http.get("/v1/bars", params=params).status_code == 401
        headers = {"X-API-Key": "integration-key", "X-Correlation-ID": "it-1"}
        bars = http.get("/v1/bars", params=params, headers=headers)
        assert bars.status_code == 200 and bars.headers["X-Correlation-ID"] == "it-1"
        total = sum(b["trades"] for b in bars.json()["data"])
        assert total == asx_frames(DAY)["trades"].filter(asx_frames(DAY)["trades"]["symbol"] == "BHP").height
        with http.stream("GET", "/v1/replay", headers=headers, params={
            "symbols": "BHP", "start": "2014-03-11T23:10:00Z", "end": "2014-03-11T23:11:00Z", "stream": "sse"
        }) as stream:  # fmt: skip
            events = [line for line in stream.iter_lines() if line.startswith("event: ")]
        assert len(events) > 10
        assert http.get("/metrics").status_code == 200


def _with_api(settings: Settings, **api: object) -> Settings:
    data = settings.model_dump()
    data["api"] = {**data["api"], **api}
    return load_settings(
        **{k: v for k, v in data.items() if k in ("data_dir", "kafka", "redis", "lake", "state", "api")}
    )


def test_live_streams_are_capped_per_key_and_end_when_idle(lake_settings: Settings) -> None:
    ensure_topics(lake_settings.kafka)
    settings = _with_api(lake_settings, max_streams_per_key=1, stream_idle_s=1.5)
    headers = {"X-API-Key": "integration-key"}
    with TestClient(create_app(settings)) as client:
        deadline = time.monotonic() + 30  # new topics: wait until their leaders are elected
        params = {"symbol": "BHP", "consistency": "watermark"}
        while client.get("/v1/trades/recent", params=params, headers=headers).status_code != 200:
            assert time.monotonic() < deadline, "the new topics never got leaders"
            time.sleep(0.5)
        started = time.monotonic()
        with client.stream("GET", "/v1/stream", params={"symbols": "BHP"}, headers=headers) as first:
            assert first.status_code == 200
            second = client.get("/v1/stream", params={"symbols": "RIO"}, headers=headers)
            assert second.status_code == 429 and second.json()["error"] == "too_many_streams"
            lines = [line for line in first.iter_lines() if line.startswith("data: ")]
        assert time.monotonic() - started < 15  # nothing arrived: the stream ended on its own
        assert lines[-1] == 'data: {"closed": "api.stream_idle_s"}'
        assert client.app.state.k2.streams.open_streams() == 0  # type: ignore[attr-defined]


def test_rate_limits_are_shared_through_redis(lake_settings: Settings) -> None:
    # Two apps stand for two workers (or replicas): one budget, not one each.
    settings = _with_api(lake_settings, rate_limit_per_minute=3, rate_limit_backend="redis")
    one, two = TestClient(create_app(settings)), TestClient(create_app(settings))
    headers = {"X-API-Key": "integration-key"}
    params = {"symbols": "BHP"}
    codes = [one.get("/v1/latest", params=params, headers=headers).status_code for _ in range(2)]
    codes += [two.get("/v1/latest", params=params, headers=headers).status_code for _ in range(2)]
    assert codes == [200, 200, 200, 429]
