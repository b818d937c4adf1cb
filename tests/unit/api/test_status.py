"""/v1/status: the pipeline's status file typed, with the lake's gap counts; and the page at /."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from k2.api import create_app
from k2.api.dashboard import CONTENT_SECURITY_POLICY
from k2.config import load_settings
from k2.query.engine import QueryEngine
from k2.resilience.status import StatusFile, status_path

# What Governor.status() writes (tests/unit/pipeline/test_governor.py checks the writer's side).
DOCUMENT: dict[str, Any] = {
    "degradation": {"level": "GRACEFUL", "since_s": 12.5, "cause": "lag", "detail": "lag 2000000 >= 1000000",
                    "defer_tiers": [3], "consume": "all", "backfill": "paused"},
    "signals": {"lag": 30, "peak_lag": 90, "batch_ratio": 0.4,
                "lags": [{"topic": "k2.trades", "partition": 0, "lag": 10}, {"topic": "k2.trades", "partition": 1, "lag": 20}]},
    "rate": {"messages_per_s": 812.5, "written_per_s": 800.0},
    "commit": {"count": 7, "last_s": 0.42, "last_at": "2026-01-01T00:00:00.000+00:00"},
    "quality": {"gaps_recorded": {"trades": 3, "quotes": 1}, "gaps_recovered": {"trades": 2},
                "gaps_open": {"trades": 1}, "holes_pending": {"quotes": 2}, "duplicates": {"trades": 5},
                "dead_letters": 4,
                "latest_dead_letters": [{"at": "2026-01-01T00:00:00.000+00:00", "reason": "price <= 0",
                                         "source": "topic=k2.trades partition=1 offset=9"}]},
    "breakers": [{"name": "iceberg", "state": "open", "failures": 5, "retry_after": 2.5, "opened_total": 1}],
    "stalled": True, "stall_cause": "catalog down", "tiers": {}, "deferred": 100, "spilled": 90,
    "backfilled": 40, "stats": {"messages": 1000, "written": 950, "duplicates": 5, "dead_letters": 4,
                                "commits": 7, "stalls": 1},
    "running": True,
}  # fmt: skip


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "k2"


def _client(data_dir: Path, engine: QueryEngine, **api: Any) -> TestClient:
    settings = load_settings(data_dir=data_dir, api={"rate_limit_per_minute": 100_000, **api})
    return TestClient(create_app(settings, engine=engine), raise_server_exceptions=False)


def test_without_a_pipeline_ingest_is_null_and_the_lake_still_answers(
    data_dir: Path, api_engine: QueryEngine
) -> None:
    body = _client(data_dir, api_engine).get("/v1/status").json()
    assert body["ingest"] is None
    assert body["quality"]["lake_error"] is None and body["quality"]["dead_letters"] == 0
    assert body["quality"]["gaps_recorded"] == {"trades": 0, "quotes": 0}
    assert body["quality"]["by_symbol"] == []  # the session's lake holds no gap events
    assert set(body["live"]) == {"tail_rows", "tail_bytes"}


def test_the_status_file_is_typed_for_the_dashboard(data_dir: Path, api_engine: QueryEngine) -> None:
    status = StatusFile(status_path(data_dir))
    status.record("NORMAL", "GRACEFUL", "lag", "lag 2000000 >= 1000000")
    status.write(DOCUMENT)  # pid: this process, alive
    body = _client(data_dir, api_engine).get("/v1/status").json()
    ingest = body["ingest"]
    assert ingest["running"] is True and ingest["pid"] == os.getpid() and ingest["age_s"] < 60
    assert (ingest["level"], ingest["level_since_s"]) == ("GRACEFUL", 12.5)
    assert ingest["transitions"][0] | {"at": "-"} == {
        "at": "-",
        "previous": "NORMAL",
        "level": "GRACEFUL",
        "cause": "lag",
        "detail": "lag 2000000 >= 1000000",
    }
    assert ingest["lags"] == DOCUMENT["signals"]["lags"] and ingest["lag"] == 30
    assert (ingest["messages_per_s"], ingest["commits"], ingest["commit_last_s"]) == (812.5, 7, 0.42)
    assert ingest["freshness_s"] > 0 and ingest["last_commit_at"] == "2026-01-01T00:00:00.000+00:00"
    assert (ingest["deferred"], ingest["spilled"], ingest["backfilled"]) == (100, 90, 40)
    assert ingest["stalled"] and ingest["stall_cause"] == "catalog down"
    assert ingest["breakers"][0]["state"] == "open"
    quality = body["quality"]
    assert quality["gaps_recorded"] == {"trades": 3, "quotes": 1}
    assert quality["holes_pending"] == {"trades": 0, "quotes": 2}
    assert quality["dead_letters"] == 4 and quality["latest_dead_letters"][0]["reason"] == "price <= 0"


def test_a_file_of_an_older_k2_reads_as_zeros(data_dir: Path, api_engine: QueryEngine) -> None:
    old = {k: DOCUMENT[k] for k in ("degradation", "breakers", "deferred", "spilled", "backfilled", "stats")}
    StatusFile(status_path(data_dir)).write({**old, "signals": {"lag": 3, "peak_lag": 3, "batch_ratio": 0}})
    ingest = _client(data_dir, api_engine).get("/v1/status").json()["ingest"]
    assert ingest["lags"] == [] and ingest["messages_per_s"] == 0 and ingest["commit_last_s"] is None
    assert ingest["commits"] == 7 and ingest["running"] is False  # "running" missing: not claimed


def test_status_needs_the_key_when_keys_are_configured(data_dir: Path, api_engine: QueryEngine) -> None:
    client = _client(data_dir, api_engine, api_keys=["s3cret"])
    refused = client.get("/v1/status")
    assert refused.status_code == 401 and "X-API-Key" in refused.json()["detail"]
    assert client.get("/v1/status", headers={"X-API-Key": "s3cret"}).status_code == 200
    assert client.get("/").status_code == 200  # the page itself is open: it asks for the key


def test_the_status_response_is_documented_with_its_model(data_dir: Path, api_engine: QueryEngine) -> None:
    spec = _client(data_dir, api_engine).get("/openapi.json").json()
    operation = spec["paths"]["/v1/status"]["get"]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/PipelineStatus"
    }
    assert {"401", "429"} <= set(operation["responses"])
    ingest = spec["components"]["schemas"]["Ingest"]["properties"]
    assert {"lags", "messages_per_s", "commit_last_s", "freshness_s", "breakers", "transitions"} <= set(
        ingest
    )


_ASSET = re.compile(r"""(?:src|href)\s*=\s*["'](/[^"']+)["']""")


def test_the_dashboard_page_loads_only_local_assets(data_dir: Path, api_engine: QueryEngine) -> None:
    client = _client(data_dir, api_engine)
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "connect-src 'self'" in CONTENT_SECURITY_POLICY and "default-src 'self'" in CONTENT_SECURITY_POLICY
    assert not re.search(r"(?:src|href)\s*=\s*[\"']https?:", page.text)
    assets = [a for a in _ASSET.findall(page.text) if a.startswith("/static/")]
    assert {"/static/dashboard/dashboard.js", "/static/dashboard/dashboard.css"} <= set(assets)
    for asset in assets:
        assert client.get(asset).status_code == 200, asset
    script = client.get("/static/dashboard/dashboard.js").text
    assert "http://" not in script.replace("http://www.w3.org/2000/svg", "") and "https://" not in script
    assert "/" not in client.get("/openapi.json").json()["paths"]


def test_the_bars_time_travel_the_dashboard_uses_is_validated(client: TestClient) -> None:
    window = {"symbols": "BHP", "start": "2014-03-10T23:00:00Z", "end": "2014-03-10T23:05:00Z"}
    snapshot = client.get("/v1/snapshots", params={"table": "trades"}).json()["data"][-1]["snapshot_id"]
    assert client.get("/v1/bars", params={**window, "snapshot_id": snapshot}).status_code == 200
    for bad, status in (
        ({"snapshot_id": -1}, 400),
        ({"snapshot_id": "abc"}, 422),
        ({"snapshot_id": 2**63 - 1}, 404),
        ({"snapshot_id": snapshot, "as_of": "2030-01-01T00:00:00Z"}, 400),
        ({"as_of": "yesterday"}, 400),
    ):
        response = client.get("/v1/bars", params={**window, **bad})
        assert response.status_code == status, (bad, response.text)
        assert response.json()["detail"], bad
