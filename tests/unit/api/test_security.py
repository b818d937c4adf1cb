"""API keys, rate limits, caps and timeouts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from k2.api import create_app
from k2.api.errors import AuthenticationError, InsecureBindError, RateLimitedError
from k2.api.security import ApiKeys, RateLimiter, is_loopback
from k2.config import load_settings
from k2.query.errors import QueryTimeoutError

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


def test_token_bucket_refills() -> None:
    now = [0.0]
    limiter = RateLimiter(60, clock=lambda: now[0])  # one token per second, burst 60
    for _ in range(60):
        limiter.acquire("c")
    with pytest.raises(RateLimitedError) as info:
        limiter.acquire("c")
    assert info.value.retry_after == 1
    now[0] += 1.0
    limiter.acquire("c")
    with pytest.raises(RateLimitedError):
        limiter.acquire("c")
    limiter.acquire("other")  # buckets are independent


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
