from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from k2.api import create_app
from k2.api.server import server_config
from k2.config import Settings, load_settings
from k2.query.engine import QueryEngine
from k2.services.process import free_port
from tests.unit.query.lakedata import append_commits, asx_frames, new_catalog

DAYS = (date(2014, 3, 11), date(2014, 3, 12))


@pytest.fixture(scope="session")
def api_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two ASX days in K2's tables (appended over 3 commits), under a data dir Settings can name."""
    root = tmp_path_factory.mktemp("api-lake")
    _catalog, tables = new_catalog(root / "lake")
    frames = asx_frames(DAYS)
    for kind in ("trades", "quotes"):
        append_commits(tables[kind], frames[kind], 3)
    return root


@pytest.fixture(scope="session")
def api_engine(api_lake: Path) -> Iterator[QueryEngine]:
    catalog, _ = new_catalog(api_lake / "lake")
    engine = QueryEngine(catalog, "k2", refresh_interval_s=0)
    yield engine
    engine.close()


@pytest.fixture
def make_client(api_lake: Path, api_engine: QueryEngine) -> Callable[..., TestClient]:
    """A TestClient for an app with the given API settings (sharing the session's engine)."""

    def build(**api: Any) -> TestClient:
        settings: Settings = load_settings(data_dir=api_lake / "k2", api=api)
        app: FastAPI = create_app(settings, engine=api_engine)
        return TestClient(app, raise_server_exceptions=False)

    return build


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(rate_limit_per_minute=100_000)


@dataclass
class LiveServer:
    """A real uvicorn (K2's server_config) on a loopback port, in a thread of the test process."""

    url: str
    app: FastAPI
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self, timeout_s: float = 15.0) -> float:
        """Ask it to exit as SIGTERM would; the seconds it took."""
        started = time.monotonic()
        self.server.should_exit = True
        self.thread.join(timeout=timeout_s)
        return time.monotonic() - started


@pytest.fixture
def make_server(api_lake: Path, api_engine: QueryEngine) -> Iterator[Callable[..., LiveServer]]:
    """Start real servers for an app with the given API settings; every one is stopped afterwards."""
    started: list[LiveServer] = []

    def build(**api: Any) -> LiveServer:
        port = free_port()
        settings = load_settings(data_dir=api_lake / "k2", api={"port": port, **api})
        app = create_app(settings, engine=api_engine)
        server = uvicorn.Server(server_config(settings, app))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.started, "uvicorn did not start"
        live = LiveServer(f"http://127.0.0.1:{port}", app, server, thread)
        started.append(live)
        return live

    yield build
    for live in started:
        live.stop()


@pytest.fixture(autouse=True)
def _clear_of_a_rate_window_edge() -> None:
    """Start each test well inside a rate-limit minute.

    The sliding-window counter weighs the previous minute by how much of it is still in the
    window, so just after a minute turns a spent budget looks a fraction unspent: exact request
    counts in a test would flake there.
    """
    into = time.time() % 60
    if into > 50:
        time.sleep(60.2 - into)
