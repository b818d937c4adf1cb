"""The OpenAPI schema no longer lies: one regression test per lie, against the real app and lake.

Each test reads what the schema now says about a parameter, then shows the server agrees: values
at the schema's edges are accepted (200), values just past them refused with a 4xx that says why.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from k2.api.openapi import time_zones
from k2.api.patterns import DATE, DATE_TIME, SYMBOLS
from k2.lake.tables import TABLES

WINDOW = {"start": "2014-03-10T23:00:00Z", "end": "2014-03-10T23:05:00Z"}
WINDOWED = ("/v1/trades", "/v1/quotes", "/v1/bars", "/v1/trades-with-quotes", "/v1/replay")


def _parameter(client: TestClient, path: str, name: str) -> dict[str, Any]:
    spec = client.get("/openapi.json").json()
    found = [p for p in spec["paths"][path]["get"]["parameters"] if p["name"] == name]
    assert found, (path, name)
    return found[0]


def _schema(parameter: dict[str, Any]) -> dict[str, Any]:
    """The parameter's schema without the null branch of an optional one."""
    schema = parameter["schema"]
    branches = [s for s in schema.get("anyOf", [schema]) if s.get("type") != "null"]
    assert len(branches) == 1
    return branches[0]


# Lie 1: symbols (symbol) documented optional, but a 400 without them.
@pytest.mark.parametrize(
    ("path", "name"),
    [(p, "symbols") for p in ("/v1/trades", "/v1/quotes", "/v1/bars", "/v1/trades-with-quotes", "/v1/stream")]
    + [(p, "symbol") for p in ("/v1/trades/recent", "/v1/quotes/recent", "/v1/bars/live")],
)
def test_symbols_are_required_where_a_query_needs_them(client: TestClient, path: str, name: str) -> None:
    parameter = _parameter(client, path, name)
    assert parameter["required"] is True and _schema(parameter)["pattern"] == SYMBOLS


@pytest.mark.parametrize("path", ["/v1/latest", "/v1/symbols", "/v1/gaps", "/v1/replay"])
def test_symbols_stay_optional_where_all_symbols_is_an_answer(client: TestClient, path: str) -> None:
    assert not _parameter(client, path, "symbols").get("required", False)
    params = {**WINDOW, "speed": None} if path == "/v1/replay" else {}
    assert client.get(path, params={k: v for k, v in params.items() if v}).status_code == 200


# Lie 2: start and end documented optional on windowed queries, but a 400 without them.
@pytest.mark.parametrize("path", WINDOWED)
def test_window_ends_are_required_and_iso_8601(client: TestClient, path: str) -> None:
    for name in ("start", "end"):
        parameter = _parameter(client, path, name)
        assert parameter["required"] is True and _schema(parameter)["pattern"] == DATE_TIME
    response = client.get(path, params={"symbols": "BHP", "start": WINDOW["start"]})
    assert response.status_code == 400 and response.json()["detail"] == "end: is required"


# Lie 3: table was any string; only four names are tables.
def test_snapshot_table_is_an_enum_of_the_tables(client: TestClient) -> None:
    assert _schema(_parameter(client, "/v1/snapshots", "table"))["enum"] == list(TABLES)
    for table in TABLES:
        assert client.get("/v1/snapshots", params={"table": table}).status_code == 200
    assert client.get("/v1/snapshots", params={"table": "users"}).status_code == 400


# Lie 4: snapshot_id and as_of together were allowed by the schema and refused by the server.
def test_snapshot_id_and_as_of_exclude_each_other_in_the_schema_text(client: TestClient) -> None:
    for name in ("snapshot_id", "as_of"):
        assert "Not together with" in _parameter(client, "/v1/trades", name)["description"]
    both = {"symbols": "BHP", **WINDOW, "snapshot_id": 1, "as_of": "2030-01-01T00:00:00Z"}
    response = client.get("/v1/trades", params=both)
    assert response.status_code == 400 and "not both" in response.json()["detail"]
    assert "snapshot_id with as_of" in client.get("/openapi.json").json()["paths"]["/v1/trades"]["get"][
        "responses"]["400"]["description"]  # fmt: skip


def test_snapshot_id_is_a_non_negative_64_bit_integer(client: TestClient) -> None:
    schema = _schema(_parameter(client, "/v1/trades", "snapshot_id"))
    assert (schema["minimum"], schema["maximum"]) == (0, 2**63 - 1)
    at_max = client.get("/v1/trades", params={"symbols": "BHP", **WINDOW, "snapshot_id": 2**63 - 1})
    assert at_max.status_code == 404  # a well-formed id that names no snapshot
    past = client.get("/v1/trades", params={"symbols": "BHP", **WINDOW, "snapshot_id": 2**63})
    assert past.status_code == 400 and "snapshot_id" in past.json()["detail"]


# Lie 5: free text where only a pattern is accepted.
@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("bhp, rio ", True),  # either case, spaces around
        (",".join(f"S{i}" for i in range(100)), True),
        (",".join(f"S{i}" for i in range(101)), False),
        ("BHP,,RIO", False),
        ("B;P", False),
        ("A" * 17, False),
    ],
)
def test_symbols_pattern_is_what_the_server_accepts(client: TestClient, value: str, ok: bool) -> None:
    assert bool(re.search(SYMBOLS, value)) is ok
    response = client.get("/v1/latest", params={"symbols": value})
    assert response.status_code == (200 if ok else 400), response.text
    if not ok:
        assert "comma-separated symbols" in response.json()["detail"]


@pytest.mark.parametrize(
    ("start", "ok"),
    [
        ("2014-03-10", True),
        ("2014-03-10T23:00", True),
        ("2014-03-11T10:00:00.123456+11:00", True),
        ("1971-01-01T00:00:00-23:59", True),
        ("2014-02-29", False),  # no such day
        ("1970-06-01T00:00:00Z", False),  # before 1971
        ("2014-03-10 23:00", False),
        ("10 March", False),
    ],
)
def test_times_are_iso_8601_within_1971_to_2199(client: TestClient, start: str, ok: bool) -> None:
    assert bool(re.search(DATE_TIME, start)) is ok
    response = client.get("/v1/latest", params={"symbols": "BHP", "as_of": start})
    assert response.status_code == (200 if ok else 400), response.text  # 200: empty, before the first commit


def test_sessions_are_dates_that_exist(client: TestClient) -> None:
    assert _schema(_parameter(client, "/v1/symbols", "start"))["pattern"] == DATE
    assert client.get("/v1/symbols", params={"start": "2016-02-29", "end": "2016-03-01"}).status_code == 200
    assert client.get("/v1/symbols", params={"start": "2015-02-29"}).status_code == 400


@pytest.mark.parametrize(
    ("path", "name", "good", "bad"),
    [
        (
            "/v1/bars",
            "interval",
            ["1s", "86400s", "1440m", "24h", "1d"],
            ["0s", "86401s", "2d", "500ms", "1.5m"],
        ),
        ("/v1/trades-with-quotes", "tolerance", ["1us", "250ms", "1d"], ["0us", "86400001ms", "-5m", "5 m"]),
    ],
)
def test_durations_pattern_holds_the_range(
    client: TestClient, path: str, name: str, good: list[str], bad: list[str]
) -> None:
    pattern = _schema(_parameter(client, path, name))["pattern"]
    base = {"symbols": "BHP", **WINDOW}
    for value in good:
        assert re.search(pattern, value), value
        assert client.get(path, params={**base, name: value}).status_code == 200, value
    for value in bad:
        assert not re.search(pattern, value), value
        response = client.get(path, params={**base, name: value})
        assert response.status_code == 400 and "a whole number and a unit" in response.json()["detail"], value


def test_order_and_kinds_are_enums(client: TestClient) -> None:
    assert _schema(_parameter(client, "/v1/trades", "order"))["enum"] == ["asc", "desc", "oldest", "newest"]
    kinds = _schema(_parameter(client, "/v1/replay", "kinds"))["enum"]
    assert kinds == _schema(_parameter(client, "/v1/stream", "kinds"))["enum"]
    for value in kinds:
        response = client.get("/v1/replay", params={"symbols": "BHP", **WINDOW, "kinds": value})
        assert response.status_code == 200, value
    assert (
        client.get("/v1/replay", params={"symbols": "BHP", **WINDOW, "kinds": "trades,"}).status_code == 400
    )


def test_tz_lists_the_zones_the_server_takes(client: TestClient) -> None:
    zones = _schema(_parameter(client, "/v1/bars", "tz"))["enum"]
    assert zones == list(time_zones()) and {"UTC", "Australia/Sydney"} <= set(zones)
    for zone in (zones[0], zones[-1], "America/Port-au-Prince"):
        response = client.get("/v1/bars", params={"symbols": "BHP", **WINDOW, "tz": zone})
        assert response.status_code == 200, zone


# Lie 6: numbers without their bounds.
def test_limit_maximum_is_the_configured_row_cap(make_client: Callable[..., TestClient]) -> None:
    client = make_client(rate_limit_per_minute=100_000, max_rows=500)
    for path in ("/v1/trades", "/v1/snapshots"):
        schema = _schema(_parameter(client, path, "limit"))
        assert (schema["minimum"], schema["maximum"]) == (1, 500)
    base = {"symbols": "BHP", **WINDOW}
    assert client.get("/v1/trades", params={**base, "limit": 500}).status_code == 200
    over = client.get("/v1/trades", params={**base, "limit": 501})
    assert over.status_code == 400 and "api.max_rows" in over.json()["detail"]
    assert client.get("/v1/trades", params={**base, "limit": 0}).status_code == 400


def test_speed_is_bounded_and_finite(client: TestClient) -> None:
    schema = _schema(_parameter(client, "/v1/replay", "speed"))
    assert (schema["minimum"], schema["maximum"]) == (0.1, 10_000)
    base = {"symbols": "BHP", **WINDOW}
    assert client.get("/v1/replay", params={**base, "speed": 10_000}).status_code == 200
    for bad in ("0.09", "10001", "nan", "inf"):
        assert client.get("/v1/replay", params={**base, "speed": bad}).status_code == 400, bad


def test_minutes_maximum_is_the_configured_hybrid_window(client: TestClient) -> None:
    schema = _schema(_parameter(client, "/v1/trades/recent", "minutes"))
    assert schema["exclusiveMinimum"] == 0 and schema["maximum"] == 1440.0


# Lie 7: a made-up cursor looked like any string.
def test_cursor_says_it_must_come_from_the_previous_page(client: TestClient) -> None:
    parameter = _parameter(client, "/v1/trades", "cursor")
    assert "next_cursor of the previous page" in parameter["description"]
    response = client.get("/v1/trades", params={"symbols": "BHP", **WINDOW, "cursor": "made-up"})
    assert response.status_code == 400 and response.json()["error"] == "invalid_cursor"


# 400 and 422 say which is which.
def test_a_value_of_the_wrong_type_is_422_and_one_off_its_schema_is_400(client: TestClient) -> None:
    base = {"symbols": "BHP", **WINDOW}
    wrong_type = client.get("/v1/trades", params={**base, "limit": "many"})
    assert wrong_type.status_code == 422 and wrong_type.json()["error"] == "invalid_parameter"
    off_range = client.get("/v1/trades", params={**base, "limit": -1})
    assert off_range.status_code == 400
