"""API keys, rate limits, caps and timeouts."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from k2.api import create_app
from k2.api.errors import AuthenticationError, InsecureBindError, RateLimitedError
from k2.api.security import ApiKeys, RateLimiter, is_loopback
from k2.config import load_settings
from k2.query.errors import QueryTimeoutError
from tests.unit.api.conftest import LiveServer

LATEST = ("/v1/latest", {"symbols": "BHP"})


def test_loopback_detection() -> None:
    assert (
        is_loopback("127.0.0.1")
        and is_loopback("localhost")
        and is_loopback("::1")
        and is_loopback("127.8.9.1")
    )
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.5") and not is_loopback("example.org")


def test_binding_beyond_localhost_without_keys_refuses_to_start(tmp_path: Any) -> None:
    settings = load_settings(data_dir=tmp_path, api={"host": "0.0.0.0"})
    with pytest.raises(InsecureBindError, match=r"api\.api_keys is empty"):
        create_app(settings)


def test_key_required_beyond_localhost(make_client: Callable[..., TestClient]) -> None:
    client = make_client(host="0.0.0.0", api_keys=["s3cret-key", "other-key"])
    missing = client.get(LATEST[0], params=LATEST[1])
    assert missing.status_code == 401 and missing.json()["error"] == "unauthorized"
    assert "X-API-Key" in missing.json()["detail"]
    wrong = client.get(LATEST[0], params=LATEST[1], headers={"X-API-Key": "s3cret-kez"})
    assert wrong.status_code == 401 and "not valid" in wrong.json()["detail"]
    for key in ("s3cret-key", "other-key"):
        assert client.get(LATEST[0], params=LATEST[1], headers={"X-API-Key": key}).status_code == 200
    assert client.get("/health").status_code == 200  # probes need no key


def test_no_key_needed_on_localhost_by_default(client: TestClient) -> None:
    assert client.get(LATEST[0], params=LATEST[1]).status_code == 200


def test_configured_keys_apply_on_localhost_too() -> None:
    keys = ApiKeys([SecretStr("k1")], host="127.0.0.1")
    assert keys.required
    with pytest.raises(AuthenticationError):
        keys.check(None)
    assert keys.check("k1") is not None and "k1" not in (keys.check("k1") or "")


def test_rate_limit_returns_429_with_retry_after(make_client: Callable[..., TestClient]) -> None:
    client = make_client(rate_limit_per_minute=3)
    codes = [client.get(LATEST[0], params=LATEST[1]).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    refused = client.get(LATEST[0], params=LATEST[1])
    assert refused.status_code == 429 and refused.json()["error"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) >= 1
    assert "3 requests per minute" in refused.json()["detail"]
    assert client.get("/health").status_code == 200  # not rate limited


def test_rate_limit_is_per_key(make_client: Callable[..., TestClient]) -> None:
    client = make_client(rate_limit_per_minute=1, api_keys=["a", "b"])
    assert client.get(LATEST[0], params=LATEST[1], headers={"X-API-Key": "a"}).status_code == 200
    assert client.get(LATEST[0], params=LATEST[1], headers={"X-API-Key": "a"}).status_code == 429
    assert client.get(LATEST[0], params=LATEST[1], headers={"X-API-Key": "b"}).status_code == 200


def test_limiter_counts_per_caller_and_says_when_to_return() -> None:
    limiter = RateLimiter(60)
    for _ in range(60):
        limiter.acquire("c")
    with pytest.raises(RateLimitedError) as info:
        limiter.acquire("c")
    assert 1 <= info.value.retry_after <= 60
    limiter.acquire("other")  # budgets are independent


def test_caps_say_the_cap(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_rows=50, max_range_days=1)
    too_many = client.get("/v1/trades", params={"symbols": "BHP", "start": "2014-03-10T23:00:00Z",
                                                "end": "2014-03-10T23:15:00Z", "limit": 51})  # fmt: skip
    assert too_many.status_code == 400 and too_many.json()["error"] == "cap_exceeded"
    assert "cap of 50 rows" in too_many.json()["detail"] and "api.max_rows" in too_many.json()["detail"]
    too_long = client.get("/v1/bars", params={"symbols": "BHP", "start": "2014-03-01", "end": "2014-03-12"})
    assert (
        too_long.status_code == 400
        and "at most 1 days per query (api.max_range_days)" in too_long.json()["detail"]
    )
    big = client.get("/v1/bars", params={"symbols": "BHP", "start": "2014-03-10T13:00:00Z",
                                         "end": "2014-03-11T13:00:00Z", "interval": "1m"})  # fmt: skip
    assert big.status_code == 400 and "more than 50 rows" in big.json()["detail"]


class _SlowEngine:
    """Stands in for an engine whose query hit the timer (the interrupt itself: test_runner)."""

    limits = None

    def with_limits(self, limits: Any) -> _SlowEngine:
        return self

    def window(self, start: str, end: str) -> Any:
        return None

    def latest(self, *args: Any, **kwargs: Any) -> Any:
        raise QueryTimeoutError("latest", 0.5)


def test_timeout_is_504_with_message(api_lake: Any) -> None:
    settings = load_settings(data_dir=api_lake / "k2")
    client = TestClient(create_app(settings, engine=_SlowEngine()), raise_server_exceptions=False)  # type: ignore[arg-type]
    response = client.get(LATEST[0], params=LATEST[1])
    assert response.status_code == 504
    assert response.json()["error"] == "query_timeout"
    assert "longer than 0.5 s (api.query_timeout_s)" in response.json()["detail"]


def test_real_timeout_through_the_api(make_client: Callable[..., TestClient]) -> None:
    """A genuinely interrupted query: a timeout far below one query's duration."""
    client = make_client(query_timeout_s=0.000_001, rate_limit_per_minute=1000)
    response = client.get("/v1/bars", params={"symbols": "RIO", "start": "2014-03-10T13:00:00Z",
                                              "end": "2014-03-11T13:00:00Z", "interval": "7s"})  # fmt: skip
    assert response.status_code == 504, response.text[:300]
    assert response.json()["error"] == "query_timeout"


def test_x_forwarded_for_does_not_pick_the_rate_limit_bucket(make_server: Callable[..., LiveServer]) -> None:
    # uvicorn believes X-Forwarded-For from loopback by default: one header was a fresh budget.
    live = make_server(rate_limit_per_minute=3)
    with httpx.Client(base_url=live.url, timeout=5) as http:
        codes = [http.get(LATEST[0], params=LATEST[1]).status_code for _ in range(3)]
        forged = http.get(LATEST[0], params=LATEST[1], headers={"X-Forwarded-For": "203.0.113.9"})
    assert codes == [200, 200, 200] and forged.status_code == 429


def test_a_trusted_proxy_may_name_the_client(make_server: Callable[..., LiveServer]) -> None:
    live = make_server(rate_limit_per_minute=1, trusted_proxies=["127.0.0.1"])
    with httpx.Client(base_url=live.url, timeout=5) as http:
        first = http.get(LATEST[0], params=LATEST[1], headers={"X-Forwarded-For": "203.0.113.9"})
        second = http.get(LATEST[0], params=LATEST[1], headers={"X-Forwarded-For": "203.0.113.10"})
        again = http.get(LATEST[0], params=LATEST[1], headers={"X-Forwarded-For": "203.0.113.9"})
    assert (first.status_code, second.status_code, again.status_code) == (200, 200, 429)


def test_wrong_keys_are_rate_limited(make_client: Callable[..., TestClient]) -> None:
    client = make_client(rate_limit_per_minute=3, api_keys=["right"])
    codes = [client.get(LATEST[0], params=LATEST[1], headers={"X-API-Key": f"guess-{i}"}).status_code
             for i in range(5)]  # fmt: skip
    assert codes == [401, 401, 401, 429, 429]
    # A valid key has its own budget: guessing from the same address does not lock its owner out.
    assert client.get(LATEST[0], params=LATEST[1], headers={"X-API-Key": "right"}).status_code == 200


def test_keys_follow_the_socket_not_only_the_setting(api_lake: Any, api_engine: Any) -> None:
    # api.host says loopback, but the request reached a non-loopback address (uvicorn --host 0.0.0.0).
    app = create_app(load_settings(data_dir=api_lake / "k2"), engine=api_engine)
    remote = TestClient(app, base_url="http://192.0.2.10:8000", raise_server_exceptions=False)
    refused = remote.get(LATEST[0], params=LATEST[1])
    assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
    local = TestClient(app, base_url="http://127.0.0.1:8000", raise_server_exceptions=False)
    assert local.get(LATEST[0], params=LATEST[1]).status_code == 200


def test_junk_methods_share_one_metrics_label(client: TestClient) -> None:
    for i in range(5):
        client.request(f"JUNK{i}X", "/v1/latest")
    metrics = client.get("/metrics").text
    assert "JUNK" not in metrics
    assert 'method="other"' in metrics


def test_the_limiter_keeps_no_table_of_idle_callers() -> None:
    limiter = RateLimiter(1000)
    started = time.perf_counter()
    for i in range(12_000):
        limiter.acquire(f"ip:10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    per_call = (time.perf_counter() - started) / 12_000
    assert per_call < 0.0005  # no scan of every bucket under one lock


def test_a_full_query_engine_answers_503_with_retry_after(client: TestClient, api_engine: Any) -> None:
    runner = api_engine.reader.runner
    with contextlib.ExitStack() as held:
        for _ in range(runner.max_concurrent):
            held.enter_context(runner._slot("held"))
        busy = client.get(LATEST[0], params=LATEST[1])
    assert busy.status_code == 503 and busy.json()["error"] == "busy"
    assert int(busy.headers["Retry-After"]) >= 1
    assert client.get(LATEST[0], params=LATEST[1]).status_code == 200
