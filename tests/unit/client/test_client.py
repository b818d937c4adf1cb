"""The client's pure logic over an in-memory transport: parameters, retries, errors, SSE parsing."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import httpx
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from k2.client import ApiError, ClientConnectionError, K2Client, RateLimitError
from k2.client.wire import SseParser, StreamEvent


def _arrow(n: int) -> bytes:
    sink = io.BytesIO()
    table = pa.table({"x": list(range(n))})
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def test_parameters_take_python_types_and_ask_for_arrow() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=_arrow(1))

    with K2Client("http://k2.test", transport=httpx.MockTransport(handler), api_key="k") as k2:
        k2.trades(["BHP", "RIO"], datetime(2014, 3, 10, 23, tzinfo=UTC), "2014-03-11", snapshot_id=7)
    params = dict(seen[0].url.params)
    assert params == {"symbols": "BHP,RIO", "start": "2014-03-10T23:00:00+00:00", "end": "2014-03-11",
                      "order": "asc", "limit": "50000", "snapshot_id": "7", "format": "arrow"}  # fmt: skip
    assert seen[0].headers["x-api-key"] == "k"


def test_pages_are_followed_until_no_cursor() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        cursor = request.url.params.get("cursor")
        nxt = {None: "c1", "c1": "c2"}.get(cursor)
        return httpx.Response(200, content=_arrow(3), headers={"X-K2-Next-Cursor": nxt} if nxt else {})

    with K2Client("http://k2.test", transport=httpx.MockTransport(handler)) as k2:
        assert k2.trades("BHP").height == 9
        assert [p.height for p in k2.iter_trades("BHP")] == [3, 3, 3]


def test_a_429_is_retried_after_retry_after_then_raised() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) < 3:
            return httpx.Response(429, json={"error": "rate_limited", "detail": "slow down"},
                                  headers={"Retry-After": "0"})  # fmt: skip
        return httpx.Response(200, content=_arrow(2))

    with K2Client("http://k2.test", transport=httpx.MockTransport(handler), retries=3) as k2:
        assert k2.latest("BHP").height == 2 and len(calls) == 3
    calls.clear()
    client = K2Client("http://k2.test", transport=httpx.MockTransport(handler), retries=1)
    with client as k2, pytest.raises(RateLimitError) as info:
        k2.latest("BHP")
    assert info.value.status == 429 and info.value.retry_after == 0


def test_errors_carry_status_code_detail_and_correlation_id() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/bars":
            body = {"error": "invalid_parameter", "detail": "interval: bad", "correlation_id": "abc"}
            return httpx.Response(400, json=body)
        return httpx.Response(502, text="<html>bad gateway</html>", headers={"X-Correlation-Id": "proxy-1"})

    with K2Client("http://k2.test", transport=httpx.MockTransport(handler)) as k2:
        with pytest.raises(ApiError, match=r"400 invalid_parameter: interval: bad \[correlation id abc\]"):
            k2.bars("BHP")
        with pytest.raises(ApiError) as info:
            k2.latest("BHP")
    assert (info.value.status, info.value.code, info.value.correlation_id) == (502, "http_error", "proxy-1")


def test_an_unreachable_server_is_a_clear_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client = K2Client("http://k2.test", transport=httpx.MockTransport(handler))
    with client as k2, pytest.raises(ClientConnectionError, match=r"refused.*k2\.test"):
        k2.snapshots()


def test_sse_lines_become_events_and_comments_are_skipped() -> None:
    parser = SseParser()
    lines = ["event: status", 'data: {"subscribed": ["BHP"]}', "", ": keep-alive", "", "event: trade",
             'data: {"price": 1}', ""]  # fmt: skip
    events = [e for e in map(parser.feed, lines) if e is not None]
    assert events == [StreamEvent("status", {"subscribed": ["BHP"]}), StreamEvent("trade", {"price": 1})]


def test_recent_names_its_kind() -> None:
    client = K2Client("http://k2.test", transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    with client as k2, pytest.raises(ValueError, match="trades, quotes or bars"):
        k2.recent("BHP", kind="orders")
