"""The /v1 live routes (k2.api.routes.recent) over the fake Kafka and a real lake."""

from __future__ import annotations

import itertools
import json
import threading
import time

import polars as pl
from fastapi import FastAPI
from fastapi.testclient import TestClient

from k2.api import create_app
from k2.api.routes import recent
from k2.config import Settings
from k2.hybrid import HybridEngine
from tests.unit.hybrid.conftest import Stream, ticks


def client(settings: Settings, hybrid: HybridEngine) -> TestClient:
    app: FastAPI = create_app(settings, engine=hybrid.engine)
    app.include_router(recent.router, prefix="/v1")
    app.dependency_overrides[recent.hybrid] = lambda: hybrid
    return TestClient(app, raise_server_exceptions=False)


def feed(stream: Stream, first: int, count: int) -> None:
    seqs = list(range(first, first + count))
    stream.produce("trades", ticks("trades", ["BHP"] * count, seqs, seconds=[float(s) for s in seqs]))


def test_recent_trades_json_names_the_boundary(
    settings: Settings, stream: Stream, hybrid: HybridEngine
) -> None:
    feed(stream, 1, 10)
    snapshot = stream.commit("trades")
    feed(stream, 11, 3)
    body = client(settings, hybrid).get("/v1/trades/recent", params={"symbol": "bhp", "minutes": 60}).json()
    assert body["count"] == 13 and body["history_rows"] == 10 and body["tail_rows"] == 3
    assert body["snapshot_id"] == str(snapshot) and body["snapshots"] == {"trades": str(snapshot)}
    assert body["boundary"][0]["offset"] == 10 and body["tail"][0]["end"] == 13
    assert body["truncated"] is False and body["truncated_reason"] is None
    assert [r["committed"] for r in body["data"]][-4:] == [True, False, False, False]
    assert body["data"][0]["price"] == "10.510000"  # decimals stay exact strings


def test_other_formats_bars_and_errors(settings: Settings, stream: Stream, hybrid: HybridEngine) -> None:
    feed(stream, 1, 130)
    c = client(settings, hybrid)
    csv = c.get("/v1/trades/recent", params={"symbol": "BHP", "minutes": 1, "format": "csv"})
    assert csv.headers["content-type"].startswith("text/csv") and csv.headers["x-k2-tail-rows"] == "60"
    assert pl.read_csv(csv.content).height == 60
    bars = c.get("/v1/bars/live", params={"symbol": "BHP", "minutes": 2, "interval": "1m"}).json()
    assert [b["trades"] for b in bars["data"]] == [59, 60, 11] and bars["interval_us"] == 60_000_000
    assert c.get("/v1/quotes/recent", params={"symbol": "BHP"}).json()["count"] == 0
    bad = c.get("/v1/trades/recent", params={"symbol": "BHP", "minutes": 0})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_parameter"
    assert c.get("/v1/trades/recent").status_code == 400  # no symbol
    assert c.get("/v1/stream", params={"symbols": "BHP", "kinds": "bonds"}).status_code == 400


def test_stream_sends_status_then_new_ticks(settings: Settings, stream: Stream, hybrid: HybridEngine) -> None:
    feed(stream, 1, 5)

    def later() -> None:
        time.sleep(0.3)
        feed(stream, 6, 2)

    producer = threading.Thread(target=later)
    producer.start()
    with client(settings, hybrid).stream(
        "GET", "/v1/stream", params={"symbols": "BHP", "kinds": "trades", "duration": 1.2}
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = list(response.iter_lines())
    producer.join()
    pairs = itertools.pairwise(lines)
    events = [
        (a[7:], json.loads(b[6:])) for a, b in pairs if a.startswith("event: ") and b.startswith("data: ")
    ]
    assert events[0][0] == "status"
    assert [d["sequence"] for e, d in events if e == "trade"] == [6, 7]
    assert [d["trades"] for e, d in events if e == "bar"] == [7]
