"""Shared fixtures: real Kafka and Redis, started once per session through K2's own launcher.

Each test isolates itself by unique names (topics, groups, key prefixes, catalog namespaces), so
the services are shared and the suite stays fast. PostgreSQL for the catalog is started the same
way, on first use only: a test runs on it when it is parametrised with ``CATALOGS``; so is the
local S3 server (SeaweedFS) for a warehouse on ``s3://S3_BUCKET/...``.
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
from k2.services.errors import ServiceStartError
from k2.services.process import free_port as _free_port
from k2.services.process import free_port_block

ASX_DATA = Path(__file__).resolve().parents[1] / "data" / "asx-2014-03"
#: The local S3 server's bucket (K2's launcher creates the warehouse's bucket); tests share it by prefix.
S3_BUCKET = "k2-test"


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


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """SeaweedFS through `k2 services up s3`'s launcher, on free ports, up from the first test that
    asks for it to the session's end; each test keeps its warehouse under a prefix of its own.

    On a fresh machine its first start builds SeaweedFS from its Go module (about 13 minutes on
    2 cores; cached in K2's cache directory afterwards).
    """
    home = tmp_path_factory.mktemp("k2-s3")
    for attempt in range(3):
        settings = load_settings(
            data_dir=home,
            lake={"warehouse": f"s3://{S3_BUCKET}/warehouse"},
            s3={"port": free_port_block(8)},
        )
        launcher = Launcher(settings)
        try:
            (status,) = launcher.up(["s3"], timeout_s=120)
            break
        except ServiceStartError as exc:
            # The block is in the ephemeral range: on a busy machine a client's outgoing connection
            # can take one of its 8 ports before SeaweedFS binds it. Only that is retried.
            if "address already in use" not in str(exc) or attempt == 2:
                raise
    assert status.state == "running", status
    try:
        yield settings
    finally:
        (stopped,) = launcher.down(["s3"])
        assert stopped.state == "stopped"


#: Run a test on both catalogs: ``@CATALOGS`` (its ``settings`` then name the catalog).
CATALOGS = pytest.mark.parametrize("catalog_backend", ["sqlite", "postgres"], indirect=True)


@pytest.fixture
def catalog_backend(request: pytest.FixtureRequest) -> str:
    """sqlite unless the test is parametrised with ``CATALOGS``."""
    return str(getattr(request, "param", "sqlite"))


#: Run a test with both consumers: ``@CONSUMERS`` (K2's native one, and confluent-kafka, the fallback).
CONSUMERS = pytest.mark.parametrize("consumer_kind", ["native", "python"], indirect=True)


@pytest.fixture
def consumer_kind(request: pytest.FixtureRequest) -> str:
    """``auto`` (the native consumer, which ``make`` builds) unless parametrised with ``CONSUMERS``."""
    return str(getattr(request, "param", "auto"))


@pytest.fixture
def settings(
    services: Settings,
    tmp_path: Path,
    catalog_backend: str,
    consumer_kind: str,
    request: pytest.FixtureRequest,
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
        pipeline={"group_id": f"g{tag}", "consumer": consumer_kind},
        lake=lake,
        # In-process pipelines read pytest's own RSS, which grows over a session of 1,000+ tests: at
        # the default 2 GiB budget the memory signal held a CI run's load test at SOFT with lag 0.
        # Tests of the memory signal set their own budget.
        resilience={"memory_limit_mb": 65_536},
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
