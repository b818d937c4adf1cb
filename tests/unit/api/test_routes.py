"""Every route answers, in every format, with K2's headers."""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from k2.query.engine import QueryEngine

WINDOW = {"start": "2014-03-10T23:00:00Z", "end": "2014-03-10T23:15:00Z"}
DAY = {"start": "2014-03-10T13:00:00Z", "end": "2014-03-11T13:00:00Z"}


def test_trades_page_and_cursor(client: TestClient) -> None:
    first = client.get("/v1/trades", params={"symbols": "BHP", **WINDOW, "limit": 100})
    assert first.status_code == 200
    body = first.json()
    assert body["count"] == 100 and body["next_cursor"] == first.headers["X-K2-Next-Cursor"]
    assert body["data"][0]["symbol"] == "BHP" and body["data"][0]["price"].count(".") == 1
    second = client.get(
        "/v1/trades", params={"symbols": "BHP", **WINDOW, "limit": 100, "cursor": body["next_cursor"]}
    )
    assert second.status_code == 200
    assert second.json()["data"][0]["sequence"] == body["data"][-1]["sequence"] + 1
    assert second.json()["snapshots"] == body["snapshots"]


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/trades", {"symbols": "BHP,RIO", **WINDOW}),
        ("/v1/quotes", {"symbols": "RIO", **WINDOW, "order": "desc"}),
        ("/v1/bars", {"symbols": "BHP", **DAY, "interval": "5m"}),
        ("/v1/trades-with-quotes", {"symbols": "BHP", **WINDOW, "tolerance": "10s"}),
        ("/v1/latest", {"symbols": "BHP,RIO"}),
        ("/v1/snapshots", {"table": "quotes"}),
        ("/v1/symbols", {"start": "2014-03-11", "end": "2014-03-12"}),
        ("/v1/gaps", {}),
    ],
)
@pytest.mark.parametrize("fmt", ["json", "csv", "parquet", "arrow"])
def test_formats(client: TestClient, path: str, params: dict[str, str], fmt: str) -> None:
    response = client.get(path, params={**params, "format": fmt})
    assert response.status_code == 200, response.text
    if fmt == "json":
        body = response.json()
        assert body["count"] == len(body["data"])
        rows = body["count"]
    elif fmt == "csv":
        assert response.headers["content-type"].startswith("text/csv")
        rows = len(response.text.splitlines()) - 1
    elif fmt == "parquet":
        rows = pq.read_table(io.BytesIO(response.content)).num_rows
    else:
        rows = ipc.open_stream(response.content).read_all().num_rows
    if path != "/v1/gaps":
        assert rows > 0


def test_accept_header_negotiates(client: TestClient) -> None:
    response = client.get(
        "/v1/latest", params={"symbols": "BHP"}, headers={"Accept": "application/vnd.apache.parquet"}
    )
    assert response.headers["content-type"] == "application/vnd.apache.parquet"
    assert pq.read_table(io.BytesIO(response.content)).column("symbol").to_pylist() == ["BHP"]


def test_replay_streams_ndjson_and_sse(client: TestClient) -> None:
    params = {"symbols": "BHP", "start": "2014-03-10T23:00:00Z", "end": "2014-03-10T23:01:00Z"}
    with client.stream("GET", "/v1/replay", params=params) as response:
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert len(lines) > 50 and {r["kind"] for r in lines} == {"trade", "quote"}
    assert [r["exchange_ts"] for r in lines] == sorted(r["exchange_ts"] for r in lines)
    sse = client.get("/v1/replay", params={**params, "stream": "sse", "kinds": "trades"})
    assert sse.headers["content-type"].startswith("text/event-stream")
    assert sse.text.startswith("event: trade\ndata: {")


def test_time_travel_through_the_api(client: TestClient) -> None:
    snaps = client.get("/v1/snapshots", params={"table": "trades"}).json()["data"]
    assert len(snaps) == 3
    oldest = snaps[-1]["snapshot_id"]
    now = client.get("/v1/bars", params={"symbols": "BHP", **DAY, "interval": "1d"}).json()["data"][0][
        "trades"
    ]
    then = client.get(
        "/v1/bars", params={"symbols": "BHP", **DAY, "interval": "1d", "snapshot_id": oldest}
    ).json()
    assert then["snapshots"]["trades"] == oldest
    assert then["data"][0]["trades"] < now


def test_correlation_id_echo_and_generation(client: TestClient) -> None:
    echoed = client.get("/v1/latest", params={"symbols": "BHP"}, headers={"X-Correlation-ID": "req-42"})
    assert echoed.headers["X-Correlation-ID"] == "req-42"
    made = client.get("/v1/latest", params={"symbols": "BHP"})
    assert len(made.headers["X-Correlation-ID"]) == 32
    refused = client.get("/v1/latest", params={"symbols": "B;P"}, headers={"X-Correlation-ID": "req-43"})
    assert refused.status_code == 400
    assert refused.headers["X-Correlation-ID"] == refused.json()["correlation_id"] == "req-43"
    hostile = client.get("/v1/latest", headers={"X-Correlation-ID": "x" * 500})
    assert hostile.headers["X-Correlation-ID"] != "x" * 500


def test_correlation_id_is_bound_into_log_lines(client: TestClient) -> None:
    import structlog

    with structlog.testing.capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        client.get("/v1/latest", params={"symbols": "B;P"}, headers={"X-Correlation-ID": "trace-me"})
    assert logs and all(entry.get("correlation_id") == "trace-me" for entry in logs)


def test_health_and_metrics(client: TestClient) -> None:
    health = client.get("/health")
    assert health.status_code == 200
    checks = health.json()["checks"]
    assert checks["catalog"]["status"] == "ok" and "k2.trades" in checks["catalog"]["tables"]
    assert checks["state"] == {"status": "ok", "backend": "embedded"}
    assert checks["kafka"]["status"] in ("ok", "down")
    client.get("/v1/latest", params={"symbols": "BHP"})
    metrics = client.get("/metrics").text
    assert 'k2_api_requests_total{method="GET",route="/v1/latest",status="200"}' in metrics
    assert "k2_api_request_seconds_bucket" in metrics and "k2_query_seconds_bucket" in metrics


def test_openapi_documents_every_route_with_examples(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for path in ("/v1/trades", "/v1/quotes", "/v1/bars", "/v1/trades-with-quotes", "/v1/latest", "/v1/snapshots",
                 "/v1/replay", "/v1/symbols", "/v1/gaps", "/health", "/metrics"):  # fmt: skip
        assert path in spec["paths"], path
    bars = spec["paths"]["/v1/bars"]["get"]
    assert bars["responses"]["200"]["content"]["application/json"]["example"]["data"][0]["symbol"] == "BHP"
    assert {"400", "401", "429", "504"} <= set(bars["responses"])


def test_gaps_show_pending_holes_from_the_sequence_state(
    make_client: Callable[..., TestClient], api_engine: QueryEngine
) -> None:
    from datetime import UTC, date, datetime

    import polars as pl

    from k2.state.pending import PENDING_SCHEMA

    hole = pl.DataFrame(
        [("trades", "ASX", "BHP", date(2014, 3, 11), 7, 9, 3, datetime(2014, 3, 11, 1, tzinfo=UTC), None, None,
          "pending")],
        schema=list(PENDING_SCHEMA), orient="row",
    ).cast(PENDING_SCHEMA)  # type: ignore[arg-type]  # fmt: skip
    api_engine.pending = lambda: hole
    try:
        client = make_client(rate_limit_per_minute=100_000)  # its engine view copies the reader
        pending = client.get("/v1/gaps", params={"status": "pending"}).json()["data"]
        everything = client.get("/v1/gaps", params={"status": "all"}).json()["data"]
        recorded = client.get("/v1/gaps", params={"status": "open"}).json()["data"]
    finally:
        api_engine.pending = None
    assert [(g["symbol"], g["first_missing"], g["status"]) for g in pending] == [("BHP", 7, "pending")]
    assert [g for g in everything if g["status"] == "pending"] == pending
    assert all(g["status"] == "open" for g in recorded)
