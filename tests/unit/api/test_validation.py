"""Bad input gets a 4xx that names the problem; injected SQL changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

WINDOW = {"start": "2014-03-10T23:00:00Z", "end": "2014-03-10T23:05:00Z"}
#: A valid request per route; each test below breaks one parameter at a time.
BASELINE: dict[str, dict[str, Any]] = {
    "/v1/trades": {"symbols": "BHP", **WINDOW, "order": "asc", "limit": 10, "cursor": None, "as_of": None},
    "/v1/quotes": {"symbols": "BHP", **WINDOW, "order": "desc", "limit": 10, "cursor": None, "as_of": None},
    "/v1/bars": {"symbols": "BHP", **WINDOW, "interval": "1m", "tz": None, "as_of": None},
    "/v1/trades-with-quotes": {"symbols": "BHP", **WINDOW, "tolerance": "5m", "as_of": None},
    "/v1/latest": {"symbols": "BHP", "as_of": None},
    "/v1/snapshots": {"table": "trades", "limit": 5},
    "/v1/replay": {"symbols": "BHP", **WINDOW, "kinds": "trades", "stream": "ndjson", "as_of": None},
    "/v1/symbols": {"symbols": "BHP", "start": "2014-03-11", "end": "2014-03-11", "as_of": None},
    "/v1/gaps": {
        "symbols": "BHP",
        "start": "2014-03-11",
        "end": "2014-03-11",
        "kind": "trades",
        "status": "all",
    },
}
BAD: dict[str, list[tuple[dict[str, Any], str]]] = {
    "/v1/trades": [
        ({"symbols": None}, "symbols: is required"),
        ({"symbols": "BHP!"}, "symbols: expected 1 to 100 comma-separated symbols"),
        ({"start": "10 March"}, "start: expected an ISO 8601 date or time"),
        ({"end": "2014-03-10T22:00:00Z"}, "is not after start"),
        ({"end": None}, "end: is required"),
        ({"order": "up"}, "order: Input should be 'asc', 'desc'"),
        ({"limit": 0}, "limit: Input should be greater than or equal to 1"),
        ({"limit": "many"}, "limit:"),
        ({"cursor": "not-a-cursor"}, "cursor: not a cursor"),
        ({"as_of": "soon"}, "as_of:"),
        ({"snapshot_id": 7}, "has no snapshot 7"),
        ({"format": "xml"}, "format:"),
    ],
    "/v1/bars": [
        ({"interval": "0s"}, "interval: expected a whole number and a unit (s, m, h, d), from 1s to 1d"),
        ({"interval": "2d"}, "from 1s to 1d"),
        ({"interval": "fortnightly"}, "interval: expected a whole number and a unit"),
        ({"tz": "Mars/Base"}, "unknown time zone"),
        ({"start": "2013-01-01T00:00:00Z"}, "api.max_range_days"),
    ],
    "/v1/trades-with-quotes": [({"tolerance": "-5m"}, "tolerance:"), ({"tolerance": "2d"}, "tolerance:")],
    "/v1/latest": [
        ({"symbols": "a b"}, "symbols: expected 1 to 100 comma-separated symbols"),
        ({"snapshot_id": "x"}, "snapshot_id:"),
    ],
    "/v1/snapshots": [
        ({"table": "users"}, "table: Input should be 'trades', 'quotes', 'reference' or 'sequence_gaps'"),
        ({"limit": -1}, "limit:"),
    ],
    "/v1/replay": [
        ({"kinds": "orders"}, "kinds: Input should be 'trades', 'quotes'"),
        ({"speed": 0}, "speed: Input should be greater than or equal to 0.1"),
        ({"stream": "websocket"}, "stream:"),
        ({"start": "nope"}, "start:"),
    ],
    "/v1/symbols": [
        ({"start": "11/03/2014"}, "start: expected a date YYYY-MM-DD that exists"),
        ({"end": "2014-03-01"}, "before start"),
    ],
    "/v1/gaps": [
        ({"status": "closed"}, "status:"),
        ({"kind": "orders"}, "kind:"),
        ({"start": "x"}, "start:"),
    ],
}
CASES = [(path, change, message) for path, cases in BAD.items() for change, message in cases]
INJECTIONS = [
    "BHP'; DROP TABLE trades; --",
    "' OR '1'='1",
    "1); DELETE FROM quotes; --",
    "') UNION SELECT * FROM read_csv('/etc/passwd') --",
    "2014-03-10T23:00:00Z'; COPY trades TO '/tmp/x.csv'; --",
]


def params(path: str, change: dict[str, Any]) -> dict[str, Any]:
    merged = {**BASELINE[path], **change}
    return {k: v for k, v in merged.items() if v is not None}


@pytest.mark.parametrize("path", list(BASELINE))
def test_baselines_are_valid(client: TestClient, path: str) -> None:
    assert client.get(path, params=params(path, {})).status_code == 200


@pytest.mark.parametrize(
    ("path", "change", "message"), CASES, ids=[f"{p}-{next(iter(c))}" for p, c, _ in CASES]
)
def test_bad_input_is_4xx_with_a_message(
    client: TestClient, path: str, change: dict[str, Any], message: str
) -> None:
    response = client.get(path, params=params(path, change))
    assert 400 <= response.status_code < 500, response.text
    body = response.json()
    assert message in body["detail"], body
    assert body["correlation_id"] == response.headers["X-Correlation-ID"]


def test_every_route_has_bad_input_cases(client: TestClient) -> None:
    routes = {p for p in client.get("/openapi.json").json()["paths"] if p.startswith("/v1/")}
    assert set(BASELINE) <= routes and set(BASELINE) - {"/v1/quotes"} <= set(BAD)


def _state(client: TestClient) -> dict[str, Any]:
    state = {}
    for table in ("trades", "quotes", "reference", "sequence_gaps"):
        snaps = client.get("/v1/snapshots", params={"table": table, "limit": 100}).json()["data"]
        state[table] = [s["snapshot_id"] for s in snaps]
    state["rows"] = client.get("/v1/symbols").json()["data"]
    return state


def test_sql_injection_in_every_string_parameter_changes_nothing(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()["paths"]
    before = _state(client)
    tried = 0
    for path in BASELINE:
        for parameter in spec[path]["get"]["parameters"]:
            if parameter["in"] != "query":
                continue
            name = parameter["name"]
            for payload in INJECTIONS:
                response = client.get(path, params=params(path, {name: payload}))
                tried += 1
                ok_empty = response.status_code == 200 and response.headers["content-type"].startswith(
                    "application/json") and response.json()["count"] == 0  # fmt: skip
                assert 400 <= response.status_code < 500 or ok_empty, (
                    path,
                    name,
                    payload,
                    response.text[:200],
                )
    assert tried > 200
    assert _state(client) == before


@pytest.mark.parametrize(
    ("path", "name"), [("/v1/bars", "interval"), ("/v1/trades-with-quotes", "tolerance")]
)
def test_400_digit_durations_are_a_400(client: TestClient, path: str, name: str) -> None:
    window = {"symbols": "BHP", "start": "2014-03-10T23:00:00Z", "end": "2014-03-10T23:15:00Z"}
    response = client.get(path, params={**window, name: "9" * 400 + "s"})
    assert response.status_code == 400 and response.json()["detail"].startswith(f"{name}: ")
