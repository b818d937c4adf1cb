"""Shared fixtures: real Kafka and Redis, started once per session through K2's own launcher.

Each test isolates itself by unique names (topics, groups, key prefixes, catalog namespaces), so
the services are shared and the suite stays fast. PostgreSQL for the catalog is started the same
way, on first use only: a test runs on it when it is parametrised with ``CATALOGS``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from k2.config import Settings, load_settings
from k2.services import Launcher
from k2.services.process import free_port as _free_port

ASX_DATA = Path(__file__).resolve().parents[1] / "data" / "asx-2014-03"


@pytest.fixture(autouse=True)
def _no_user_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own K2_* variables or k2.toml must not leak into tests."""
    for key in list(os.environ):
        if key.startswith("K2_"):
            monkeypatch.delenv(key)


@pytest.fixture(scope="session")
def services_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("k2-services")


@pytest.fixture(scope="session")
def service_settings(services_dir: Path) -> Settings:
    """Settings naming the session's broker and Redis on free, non-default ports."""
    return load_settings(
        data_dir=services_dir,
        kafka={"port": _free_port(), "controller_port": _free_port(), "heap": "512m"},
        redis={"port": _free_port()},
    )


@pytest.fixture(scope="session")
def services(service_settings: Settings) -> Iterator[Settings]:
    """Kafka and Redis, up for the whole session, stopped at its end."""
    launcher = Launcher(service_settings)
    launcher.up(timeout_s=120)
    try:
        yield service_settings
    finally:
        launcher.down()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Settings]:
    """PostgreSQL through K2's launcher, up from the first test that asks for it to the session's end.

    Its data directory is a fresh one under /tmp that other users may traverse (0711): under root
    the server runs as the ``postgres`` user, which cannot enter pytest's private tmp tree.
    """
    home = Path(tempfile.mkdtemp(prefix="k2-pg-"))
    home.chmod(0o711)
    settings = load_settings(data_dir=home, postgres={"port": _free_port()}, lake={"catalog": "postgres"})
    launcher = Launcher(settings)
    launcher.up(["postgres"], timeout_s=120)
    try:
        yield settings
    finally:
        launcher.down(["postgres"])
        shutil.rmtree(home, ignore_errors=True)


#: Run a test on both catalogs: ``@CATALOGS`` (its ``settings`` then name the catalog).
CATALOGS = pytest.mark.parametrize("catalog_backend", ["sqlite", "postgres"], indirect=True)


@pytest.fixture
def catalog_backend(request: pytest.FixtureRequest) -> str:
    """sqlite unless the test is parametrised with ``CATALOGS``."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def settings(
    services: Settings, tmp_path: Path, catalog_backend: str, request: pytest.FixtureRequest
) -> Settings:
    """Per-test settings: the session's services, a fresh data directory and unique names.

    On the PostgreSQL catalog every test shares the session's server, so it gets a namespace of its
    own; the warehouse stays in the test's data directory.
    """
    tag = uuid.uuid4().hex[:8]
    lake: dict[str, object] = {}
    if catalog_backend == "postgres":
        pg: Settings = request.getfixturevalue("postgres")
        lake = {"catalog_uri": pg.catalog_uri, "namespace": f"t{tag}"}
    return load_settings(
        data_dir=tmp_path / "k2",
        kafka={**services.kafka.model_dump(), "topic_prefix": f"t{tag}."},
        redis={**services.redis.model_dump(), "key_prefix": f"t{tag}:"},
        pipeline={"group_id": f"g{tag}"},
        lake=lake,
    )


@pytest.fixture
def unique() -> Callable[[str], str]:
    return lambda prefix: f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def asx_data() -> Path:
    """The real ASX sample; the suite is specified against it, so its absence is an error."""
    assert ASX_DATA.is_dir(), f"ASX sample data expected at {ASX_DATA}"
    return ASX_DATA


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = str(item.fspath)
        if "/integration/" in path:
            item.add_marker(pytest.mark.integration)
        elif "/e2e/" in path:
            item.add_marker(pytest.mark.e2e)
