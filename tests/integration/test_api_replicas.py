"""Two real ``k2 serve`` replicas behind the real nginx that ``k2 services up proxy`` runs: one API.

Through the proxy's one address: every keyed request within its budget succeeds; both replicas
answer, identically, live-edge requests too although they were started with different hybrid
settings (they serve the first one's, from Redis, and show the same X-K2-Hybrid-Config); one rate-limit budget in Redis holds across them although requests alternate,
per key and, for keyless callers, per address the proxy saw (nginx's X-Forwarded-For, believed by
K2); and after a SIGKILL of one replica the other answers everything. Which replica served a request is read from nginx's access
log (``upstream=$upstream_addr``), not from anything added to the API.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from benchmarks.services import wait_served
from k2.api.hybrid_group import HEADER
from k2.config import HybridSettings, Settings, load_settings
from k2.services import Launcher
from k2.services.process import free_port
from tests.integration.test_pipeline import _env, _ingest, _produce, make_trades

pytestmark = [pytest.mark.scale, pytest.mark.integration]

KEYS = {
    "read": "replicas-read-key",
    "edge": "replicas-edge-key",
    "limit": "replicas-limit-key",
    "failover": "replicas-failover-key",
}
LIMIT = 40  # requests per minute per key: low, so that the budget is spent within the test
WINDOW = {"symbols": "BHP", "start": "2024-03-10T22:00:00Z", "end": "2024-03-11T02:00:00Z"}
#: Each replica's own hybrid settings (environment): they disagree on max_minutes and consistency.
HYBRID = [{"max_minutes": 60, "consistency": "cached"}, {"max_minutes": 1440, "consistency": "watermark"}]
#: /v1/trades/recent over 2 h: beyond the first replica's max_minutes (400), within the second's.
EDGE = {"symbol": "BHP", "minutes": 120}


def _serve(settings: Settings, port: int, log: Path, hybrid: dict[str, object]) -> subprocess.Popen[bytes]:
    env = _env(
        settings,
        **{f"K2_HYBRID__{k.upper()}": str(v) for k, v in hybrid.items()},
        K2_API__PORT=str(port),
        K2_API__API_KEYS=json.dumps(list(KEYS.values())),
        K2_API__RATE_LIMIT_BACKEND="redis",
        K2_API__RATE_LIMIT_PER_MINUTE=str(LIMIT),
        K2_API__TRUSTED_PROXIES='["127.0.0.1"]',
    )
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "k2.cli", "serve"], env=env, stdout=out, stderr=out)


def _upstreams(access_log: Path, skip: int) -> list[tuple[str, str]]:
    """(final upstream, status) of each /v1 request logged after the first ``skip`` lines."""
    out = []
    for line in access_log.read_text().splitlines()[skip:]:
        if '"GET /v1/' not in line:
            continue
        match = _LOGGED.search(line)
        assert match is not None, line
        out.append(
            (match["upstream"].split(",")[-1].strip(), match["status"])
        )  # "a, b": a failed, b answered
    return out


_LOGGED = re.compile(r'" (?P<status>\d{3}) upstream=(?P<upstream>.*?) upstream_status=')


def _client_from(address: str) -> httpx.Client:
    """A client whose connections leave from ``address`` (any of 127.0.0.0/8 on Linux)."""
    return httpx.Client(timeout=30, transport=httpx.HTTPTransport(local_address=address))


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.fixture
def replicas(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, list[subprocess.Popen[bytes]]]]:
    """A small batch of trades in the lake, two replicas on it, and the proxy in front of them.

    The first replica is up before the second starts, so the group's hybrid settings are its own.
    """
    _produce(settings, make_trades(3_000))
    ingest = _ingest(settings, "--idle-timeout", "4")
    out = ingest.communicate(timeout=180)[0].decode()
    assert ingest.returncode == 0, out[-2000:]
    ports = [free_port(), free_port()]
    procs: list[subprocess.Popen[bytes]] = []
    proxied = load_settings(
        data_dir=settings.data_dir,
        proxy={"port": free_port(), "upstreams": ",".join(f"127.0.0.1:{p}" for p in ports)},
    )
    launcher = Launcher(proxied)
    try:
        for port, hybrid in zip(ports, HYBRID, strict=True):
            log = tmp_path / f"serve-{port}.log"
            procs.append(_serve(settings, port, log, hybrid))
            wait_served(
                f"http://127.0.0.1:{port}", procs[-1], log, path="/health", ok=(200, 503), timeout_s=60
            )
        (status,) = launcher.up(["proxy"], timeout_s=30)
        assert status.state == "running", status
        yield proxied, procs
    finally:
        launcher.down(["proxy"])
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_two_replicas_behind_the_proxy_are_one_api(
    replicas: tuple[Settings, list[subprocess.Popen[bytes]]], tmp_path: Path
) -> None:
    proxied, procs = replicas
    proxy_url = f"http://127.0.0.1:{proxied.proxy.port}"
    access_log = proxied.data_dir / "services" / "proxy" / "access.log"
    direct = [f"http://{u}" for u in proxied.proxy.upstreams]
    read = {"X-API-Key": KEYS["read"]}
    queries = [("/v1/trades", WINDOW), ("/v1/bars", {**WINDOW, "interval": "1m"})]

    # 1. Each replica on its own, then through the proxy: the same answer, every time, from both.
    with httpx.Client(timeout=30) as http:
        expected = {}
        for path, params in queries:
            answers = [http.get(f"{base}{path}", params=params, headers=read) for base in direct]
            assert [a.status_code for a in answers] == [200, 200], [a.text[:200] for a in answers]
            assert answers[0].json() == answers[1].json()
            assert answers[0].json()["data"], f"{path}: no rows ingested"
            expected[path] = answers[0].json()
        before = _lines(access_log)
        for _ in range(8):
            for path, params in queries:
                response = http.get(f"{proxy_url}{path}", params=params, headers=read)
                assert response.status_code == 200, response.text[:300]
                assert response.json() == expected[path]
    served = _upstreams(access_log, before)
    assert len(served) == 16 and {s for _, s in served} == {"200"}
    assert {u for u, _ in served} == set(proxied.proxy.upstreams), served  # both replicas answered

    # 1b. The live edge: the replicas were started with different hybrid settings (the environment)
    # but serve the first one's, from Redis: a window beyond its max_minutes is refused by both
    # alike, one within it answered alike, and every response names the same settings.
    group = HybridSettings.model_validate(HYBRID[0]).fingerprint()
    same = {"X-API-Key": KEYS["edge"], "X-Correlation-ID": "replicas-edge"}
    with httpx.Client(timeout=30) as http:
        edge = [http.get(f"{base}/v1/trades/recent", params=EDGE, headers=same) for base in direct]
        assert [r.status_code for r in edge] == [400, 400] and edge[0].json() == edge[1].json()
        assert "at most 60 (hybrid.max_minutes)" in edge[0].json()["detail"]
        inside = [
            http.get(f"{base}/v1/trades/recent", params={**EDGE, "minutes": 30}, headers=same)
            for base in direct
        ]
        assert [r.status_code for r in inside] == [200, 200] and inside[0].json() == inside[1].json()
        assert inside[0].json()["data"], "no rows in the last 30 minutes"
        before = _lines(access_log)
        proxied_answers = [
            http.get(f"{proxy_url}/v1/trades/recent", params=params, headers=same)
            for _ in range(6)
            for params in (EDGE, {**EDGE, "minutes": 30})
        ]
        checks = [http.get(f"{base}/health", headers=read).json()["checks"]["hybrid"] for base in direct]
    assert [(r.status_code, r.json()) for r in proxied_answers] == [
        (400, edge[0].json()), (200, inside[0].json())
    ] * 6  # fmt: skip
    assert {r.headers[HEADER] for r in [*edge, *inside, *proxied_answers]} == {group}
    assert {u for u, _ in _upstreams(access_log, before)} == set(proxied.proxy.upstreams)
    assert [(c["status"], c["source"], c["fingerprint"]) for c in checks] == [("ok", "group", group)] * 2
    second_port = proxied.proxy.upstreams[1].rsplit(":", 1)[1]
    adopted = [
        json.loads(line)
        for line in (tmp_path / f"serve-{second_port}.log").read_text().splitlines()
        if "adopting the group" in line
    ]
    assert len(adopted) == 1 and adopted[0]["level"] == "warning", adopted
    assert set(adopted[0]["differs"]) == {"max_minutes", "consistency"}, adopted

    # 2. One budget across replicas: LIMIT requests pass, alternating, and the next one is refused.
    if time.time() % 60 > 50:  # keep the burst inside one rate-limit window
        time.sleep(61 - time.time() % 60)
    limited = {"X-API-Key": KEYS["limit"]}
    before = _lines(access_log)
    with httpx.Client(timeout=30) as http:
        codes = [
            http.get(f"{proxy_url}/v1/trades", params=WINDOW, headers=limited).status_code
            for _ in range(LIMIT)
        ]
        refused = http.get(f"{proxy_url}/v1/trades", params=WINDOW, headers=limited)
    assert codes == [200] * LIMIT
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    spent = _upstreams(access_log, before)
    per_replica = {u: sum(1 for v, _ in spent[:LIMIT] if v == u) for u in proxied.proxy.upstreams}
    # Either replica alone stayed far below LIMIT: only a shared budget refuses the (LIMIT+1)-th.
    assert all(n <= LIMIT - 10 for n in per_replica.values()) and sum(per_replica.values()) == LIMIT, (
        per_replica
    )

    # 3. Keyless callers are counted by the address the proxy saw, across replicas: K2 believes
    # nginx's X-Forwarded-For (api.trusted_proxies; without it, 127.0.0.3 below gets 429), and not
    # the addresses a client claims (nginx replaces the header; uvicorn would also skip them, as it
    # takes the rightmost untrusted address). A client on 127.0.0.2 spends its budget whatever it
    # claims; one on 127.0.0.3 keeps its own.
    if time.time() % 60 > 50:
        time.sleep(61 - time.time() % 60)
    before = _lines(access_log)
    with _client_from("127.0.0.2") as http:
        spoofed = [
            http.get(f"{proxy_url}/v1/trades", params=WINDOW, headers={"X-Forwarded-For": f"10.0.0.{i}"})
            for i in range(LIMIT + 1)
        ]
    assert [r.status_code for r in spoofed] == [401] * LIMIT + [429]
    assert {u for u, _ in _upstreams(access_log, before)} == set(proxied.proxy.upstreams)
    with _client_from("127.0.0.3") as http:
        assert http.get(f"{proxy_url}/v1/trades", params=WINDOW).status_code == 401  # not 429

    # 4. A replica dies (SIGKILL): the proxy sends everything to the other, and nothing fails.
    killed, survivor = proxied.proxy.upstreams
    procs[0].send_signal(signal.SIGKILL)
    procs[0].wait(timeout=10)
    before = _lines(access_log)
    with httpx.Client(timeout=30) as http:
        for _ in range(10):
            response = http.get(
                f"{proxy_url}/v1/trades", params=WINDOW, headers={"X-API-Key": KEYS["failover"]}
            )
            assert response.status_code == 200, response.text[:300]
            assert response.json() == expected["/v1/trades"]
    after_kill = _upstreams(access_log, before)
    assert len(after_kill) == 10 and {u for u, _ in after_kill} == {survivor}, after_kill
    assert procs[1].poll() is None and killed != survivor
