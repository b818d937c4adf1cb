from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from k2.api import create_app
from k2.config import Settings, load_settings
from k2.query.engine import QueryEngine
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
