"""The PostgreSQL launcher's refusals: each says what is wrong and what to do (no server started)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from k2.config import load_settings
from k2.services import Launcher
from k2.services.errors import ServiceError, ServiceStartError
from k2.services.postgres import PostgresService, find_bin_dir
from k2.services.process import free_port

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="the root path: the server runs as another user")


def test_missing_server_programs_say_how_to_install_them(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    settings = load_settings(data_dir=tmp_path, postgres={"bin_dir": empty, "port": free_port()})
    assert find_bin_dir(empty) is None
    with pytest.raises(ServiceError, match=r"apt-get install postgresql") as info:
        PostgresService(settings).start()
    assert "K2_POSTGRES__BIN_DIR" in str(info.value) and "K2_LAKE__CATALOG_URI" in str(info.value)
    assert not (tmp_path / "services" / "postgres").exists()  # nothing made before the check


def test_debians_server_programs_are_found() -> None:
    found = find_bin_dir(None)
    assert found is not None, "Debian's postgresql is not installed (scripts/system-deps.sh installs it)"
    assert (found / "initdb").is_file() and (found / "postgres").is_file()


@root_only
def test_under_root_a_missing_server_user_is_a_clear_error(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, postgres={"os_user": "k2-no-such-user", "port": free_port()})
    with pytest.raises(ServiceError, match=r"refuses to.*'k2-no-such-user'.*does not exist"):
        PostgresService(settings).start()


@root_only
def test_under_root_a_data_dir_the_server_user_cannot_reach_is_a_clear_error(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)  # root's private directory: 'postgres' cannot walk through it
    settings = load_settings(data_dir=closed / "k2", postgres={"port": free_port()})
    with pytest.raises(ServiceStartError, match=r"runs as 'postgres', which cannot reach .*chmod o\+x"):
        PostgresService(settings).start()
    assert not (closed / "k2" / "services" / "postgres" / "data").exists()  # no half-made cluster left


def test_postgres_is_a_default_service_only_when_the_catalog_is_on_it(tmp_path: Path) -> None:
    assert Launcher(load_settings(data_dir=tmp_path)).default_names == ("kafka", "redis")
    local = load_settings(data_dir=tmp_path, lake={"catalog": "postgres"})
    assert Launcher(local).default_names == ("kafka", "redis", "postgres")
    assert PostgresService(local).managed
    external = load_settings(data_dir=tmp_path, lake={"catalog_uri": "postgresql+psycopg2://u:pw@db:5432/c"})
    assert "postgres" in Launcher(external).default_names
    service = PostgresService(external)
    assert not service.managed and service.address == "external"
    status = service.start()  # starts nothing: the server is someone else's (here: no such host)
    assert status.state == "unreachable" and status.detail and "pw@" not in status.detail
    assert not (tmp_path / "services").exists()


def test_an_unknown_service_name_lists_postgres(tmp_path: Path) -> None:
    with pytest.raises(ServiceError, match=r"choose from kafka, redis, postgres"):
        Launcher(load_settings(data_dir=tmp_path)).up(["mysql"])
