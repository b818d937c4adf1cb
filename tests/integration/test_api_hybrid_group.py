"""API replicas share one set of hybrid settings through the session's real Redis.

Two apps stand for two replicas started with different hybrid settings (max_minutes, consistency):
both serve the first one's, so an edge request (a /recent window longer than one replica's
max_minutes) gets the same answer from either, and both show the same fingerprint. Then: an
operator publishes new settings (replicas report themselves stale, a restarted one adopts them),
the key is deleted (a replica republishes), and start-up with an unusable value or no Redis
ends with a clear error and no traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from typing import Any

import pytest
import redis
import typer
from fastapi.testclient import TestClient
from rich.console import Console
from structlog.testing import capture_logs
from typer.testing import CliRunner

from k2.api import create_app
from k2.api.errors import GroupSettingsError, GroupUnavailableError
from k2.api.hybrid_group import HEADER, KEY_SUFFIX
from k2.cli import config_cmd
from k2.cli.context import Context
from k2.config import Settings, load_settings
from k2.lake import ensure_tables, open_catalog
from k2.services.process import free_port
from k2.stream.admin import ensure_topics
from tests.integration.test_pipeline import _env
from tests.unit.query.lakedata import append_commits, asx_frames

KEY = "hybrid-group-key"
HEADERS = {"X-API-Key": KEY, "X-Correlation-ID": "same-request"}
#: Longer than replica A's max_minutes, within replica B's: the request that told them apart.
EDGE = {"symbol": "BHP", "minutes": 120}
INSIDE = {"symbol": "BHP", "minutes": 30}


@pytest.fixture
def lake(settings: Settings) -> Settings:
    """One ASX day in the test's catalog and its (empty) topics: /recent answers from both."""
    ensure_topics(settings.kafka)
    tables = ensure_tables(open_catalog(settings), settings.lake.namespace)
    frames = asx_frames((date(2014, 3, 12),))
    for kind in ("trades", "quotes"):
        append_commits(tables[kind], frames[kind], 1)
    return settings


def _replica(settings: Settings, hybrid: dict[str, Any], **api: Any) -> Settings:
    data = settings.model_dump()
    keep = ("data_dir", "kafka", "redis", "lake")
    return load_settings(
        **{k: v for k, v in data.items() if k in keep},
        api={"api_keys": [KEY], "rate_limit_per_minute": 10**6, "rate_limit_backend": "redis", **api},
        hybrid=hybrid,
    )


def _redis(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis.effective_url)


def _answers(clients: list[TestClient], params: dict[str, Any]) -> list[tuple[int, Any, str]]:
    out = []
    for client in clients:
        response = client.get("/v1/trades/recent", params=params, headers=HEADERS)
        out.append((response.status_code, response.json(), response.headers[HEADER]))
    return out


def test_two_replicas_with_different_hybrid_settings_serve_the_groups(lake: Settings) -> None:
    a = _replica(lake, {"max_minutes": 60, "consistency": "cached"})
    b = _replica(lake, {"max_minutes": 1440, "consistency": "watermark", "read_timeout_s": 3})

    # Not shared (the control): the edge request tells the replicas apart.
    alone = [create_app(_replica(lake, s.hybrid.model_dump(), shared_hybrid="off")) for s in (a, b)]
    with TestClient(alone[0]) as one, TestClient(alone[1]) as two:
        codes = [status for status, _, _ in _answers([one, two], EDGE)]
        fingerprints = {fp for _, _, fp in _answers([one, two], INSIDE)}
    assert codes == [400, 200] and len(fingerprints) == 2

    # Shared: A starts first and its settings become the group's; B adopts them, naming each field.
    first = create_app(a)
    with capture_logs() as logs:
        second = create_app(b)
    adopted = [e for e in logs if e["event"].startswith("hybrid settings: adopting")]
    assert len(adopted) == 1 and adopted[0]["log_level"] == "warning", logs
    assert adopted[0]["differs"] == {
        "max_minutes": {"own": 1440.0, "other": 60.0},
        "consistency": {"own": "watermark", "other": "cached"},
        "read_timeout_s": {"own": 3.0, "other": 2.0},
    }
    assert second.state.k2.settings.hybrid == a.hybrid
    with TestClient(first) as one, TestClient(second) as two:
        edge = _answers([one, two], EDGE)
        inside = _answers([one, two], INSIDE)
        health = [c.get("/health", headers=HEADERS).json() for c in (one, two)]
        docs = [c.get("/openapi.json").json() for c in (one, two)]
    assert edge[0] == edge[1] and edge[0][0] == 400, edge
    assert "at most 60 (hybrid.max_minutes)" in edge[0][1]["detail"]
    assert inside[0] == inside[1] and inside[0][0] == 200 and inside[0][1]["data"], inside[0][1]
    assert {fp for _, _, fp in edge + inside} == {a.hybrid.fingerprint()}
    for body in health:
        assert body["checks"]["hybrid"] == {
            "status": "ok", "source": "group", "fingerprint": a.hybrid.fingerprint(),
            "key": f"{lake.redis.key_prefix}{KEY_SUFFIX}", "group_fingerprint": a.hybrid.fingerprint(),
            "checked_s_ago": body["checks"]["hybrid"]["checked_s_ago"],
        }  # fmt: skip
    assert docs[0] == docs[1]  # the documented maximum of `minutes` too


def _cli(settings: Settings, *args: str) -> str:
    app = typer.Typer()

    @app.callback()
    def root(ctx: typer.Context) -> None:
        ctx.obj = Context(settings=settings, console=Console(width=200), err=Console(stderr=True))

    app.add_typer(config_cmd.app, name="config")
    out = CliRunner().invoke(app, ["config", *args])
    assert out.exit_code == 0, out.output
    return out.output


def test_a_published_change_is_reported_then_served_after_a_restart(lake: Settings) -> None:
    a = _replica(lake, {"max_minutes": 60})
    b = _replica(lake, {"max_minutes": 240, "consistency": "cached"})
    running = create_app(a)
    config = running.state.k2.hybrid_config
    assert "no shared hybrid settings" not in _cli(b, "hybrid", "show")
    shown = json.loads(_cli(b, "hybrid", "show", "--json"))
    assert shown["group"]["fingerprint"] == a.hybrid.fingerprint() != shown["local"]["fingerprint"]

    published = _cli(b, "hybrid", "publish")
    assert b.hybrid.fingerprint() in published and "hybrid.max_minutes" in published
    with capture_logs() as logs:
        assert config.check() == "stale"
    assert [e["differs"] for e in logs if "changed" in e["event"]] == [
        {"max_minutes": {"own": 60.0, "other": 240.0}, "consistency": {"own": "watermark", "other": "cached"}}
    ]
    with TestClient(running) as client:
        body = client.get("/health", headers=HEADERS).json()
        assert client.get("/v1/trades/recent", params=EDGE, headers=HEADERS).status_code == 400  # its own
    assert body["status"] == "degraded" and body["checks"]["hybrid"]["status"] == "stale"
    assert body["checks"]["hybrid"]["group_fingerprint"] == b.hybrid.fingerprint()

    restarted = create_app(a)  # A's configuration, restarted: it serves the published settings
    key = f"{lake.redis.key_prefix}{KEY_SUFFIX}"
    with TestClient(restarted) as client:
        response = client.get("/v1/trades/recent", params=EDGE, headers=HEADERS)
        assert response.status_code == 200 and response.headers[HEADER] == b.hybrid.fingerprint()
        # The key is lost (deleted, or a Redis without persistence restarted): the next check puts
        # the replica's settings back, so a replica starting later joins them, not its own.
        _redis(lake).delete(key)
        assert restarted.state.k2.hybrid_config.check() == "ok"
    assert json.loads(_redis(lake).get(key) or b"")["fingerprint"] == b.hybrid.fingerprint()


def _serve(settings: Settings, **env: str) -> subprocess.CompletedProcess[str]:
    """``k2 serve`` to its end: it must refuse to start, so it ends on its own (stderr unwrapped)."""
    full = _env(settings, K2_API__PORT=str(free_port()), K2_API__RATE_LIMIT_BACKEND="redis", **env)
    run = subprocess.run(
        [sys.executable, "-m", "k2.cli", "serve"], env=full, capture_output=True, text=True, timeout=60
    )
    return subprocess.CompletedProcess(run.args, run.returncode, run.stdout, " ".join(run.stderr.split()))


def test_an_unusable_value_or_no_redis_stops_start_up_with_a_clear_error(lake: Settings) -> None:
    key = f"{lake.redis.key_prefix}{KEY_SUFFIX}"
    _redis(lake).set(key, '{"version": 1, "settings": {"max_minutes": "a lot"}}')
    with pytest.raises(GroupSettingsError, match="max_minutes"):
        create_app(_replica(lake, {}))
    run = _serve(lake)
    assert run.returncode == 2, run.stderr
    assert f"Redis key '{key}'" in run.stderr and "max_minutes" in run.stderr, run.stderr
    assert "k2 config hybrid publish" in run.stderr and "Traceback" not in run.stderr
    assert run.stderr.startswith("error: Redis key"), run.stderr  # one message, nothing before it

    # publishing replaces the unusable value (that is how an operator fixes it)
    _cli(_replica(lake, {"max_minutes": 90}), "hybrid", "publish")
    assert create_app(_replica(lake, {})).state.k2.settings.hybrid.max_minutes == 90

    # No Redis at all: the replica does not start (a fallback could answer unlike the others).
    nowhere = lake.model_copy(update={"redis": lake.redis.model_copy(update={"port": free_port()})})
    with pytest.raises(GroupUnavailableError, match="did not answer"):
        create_app(_replica(nowhere, {}))
    run = _serve(nowhere)
    assert run.returncode == 1 and "did not answer" in run.stderr and "SHARED_HYBRID=off" in run.stderr
    assert "Traceback" not in run.stderr and run.stderr.startswith("error: Redis at"), run.stderr
    # ... unless told to serve its own settings
    assert create_app(_replica(nowhere, {}, shared_hybrid="off")).state.k2.hybrid_config.source == "local"
