"""The launcher against the real Kafka broker and redis-server."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import psutil
import redis
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from typer.testing import CliRunner

from k2.cli import app
from k2.config import Settings, load_settings
from k2.lake import open_catalog
from k2.services import Launcher
from tests.conftest import _free_port


def test_broker_serves_any_kafka_client(services: Settings) -> None:
    topic = f"svc-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": services.kafka.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(10)
    producer = Producer({"bootstrap.servers": services.kafka.bootstrap, "enable.idempotence": True})
    for i in range(100):
        producer.produce(topic, key=str(i % 2).encode(), value=f"m{i}".encode())
    assert producer.flush(10) == 0
    consumer = Consumer({"bootstrap.servers": services.kafka.bootstrap, "group.id": topic,
                         "auto.offset.reset": "earliest"})  # fmt: skip
    consumer.subscribe([topic])
    seen: list[bytes] = []
    for _ in range(100):
        msgs = consumer.consume(100, timeout=1.0)
        seen.extend(m.value() for m in msgs if m.error() is None)
        if len(seen) >= 100:
            break
    consumer.close()
    assert sorted(seen) == sorted(f"m{i}".encode() for i in range(100))


def test_redis_set_get_with_persistence_on(services: Settings) -> None:
    client = redis.Redis.from_url(services.redis.effective_url)
    client.set("k2:test:key", "value")
    assert client.get("k2:test:key") == b"value"
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert client.config_get("dir")["dir"].startswith(str(services.data_dir))


def test_status_and_second_up_are_harmless(services: Settings) -> None:
    launcher = Launcher(services)
    before = {s.name: s for s in launcher.status()}
    assert all(s.state == "running" and s.healthy and s.pid for s in before.values())
    assert before["kafka"].version == services.kafka.version
    assert before["redis"].version and before["redis"].version[0].isdigit()
    again = {s.name: s for s in launcher.up()}
    assert {n: s.pid for n, s in again.items()} == {n: s.pid for n, s in before.items()}


def test_down_stale_pid_and_recovery(tmp_path: Path) -> None:
    """A private Redis: up, SIGKILL (a crash), stale detected, up recovers, down stops by pid."""
    settings = load_settings(data_dir=tmp_path, redis={"port": _free_port()})
    launcher = Launcher(settings)
    (status,) = launcher.up(["redis"])
    assert status.state == "running" and status.pid
    os.kill(status.pid, signal.SIGKILL)
    psutil.Process(status.pid).wait(5)
    (crashed,) = launcher.status(["redis"])
    assert crashed.state == "stale" and "dead process" in crashed.detail
    (recovered,) = launcher.up(["redis"])
    assert recovered.state == "running" and recovered.pid != status.pid
    (down,) = launcher.down(["redis"])
    assert down.state == "stopped"
    assert not psutil.pid_exists(recovered.pid) or psutil.Process(recovered.pid).status() == "zombie"
    assert "Ready to accept connections" in launcher.logs("redis", 200)


def test_external_services_start_nothing(services: Settings, tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path,
        kafka={"bootstrap_servers": services.kafka.bootstrap},
        redis={"url": services.redis.effective_url},
    )
    statuses = Launcher(settings).up()
    assert [s.state for s in statuses] == ["external", "external"]
    assert all(s.pid is None for s in statuses)
    assert not (tmp_path / "services").exists()


def test_cli_status_up_and_logs(services: Settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("K2_DATA_DIR", str(services.data_dir))
    monkeypatch.setenv("K2_KAFKA__PORT", str(services.kafka.port))
    monkeypatch.setenv("K2_KAFKA__CONTROLLER_PORT", str(services.kafka.controller_port))
    monkeypatch.setenv("K2_REDIS__PORT", str(services.redis.port))
    runner = CliRunner()
    result = runner.invoke(app, ["services", "status", "--json"])
    assert result.exit_code == 0, result.output
    assert '"state": "running"' in result.output
    result = runner.invoke(app, ["services", "logs", "kafka", "-n", "5"])
    assert result.exit_code == 0 and result.output.strip()
    result = runner.invoke(app, ["services", "logs", "zookeeper"])
    assert result.exit_code == 1 and "unknown service" in result.output


def test_cli_rejects_bad_config(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("K2_KAFKA__PARTITIONS", "zero")
    result = CliRunner().invoke(app, ["config", "show"])
    assert result.exit_code == 2
    assert "K2_KAFKA__PARTITIONS" in result.output


def test_a_port_taken_by_another_process_is_a_clear_error(services: Settings, tmp_path: Path) -> None:
    """Another data dir must not 'start' a Redis that is really someone else's on the same port."""
    import pytest

    from k2.services.errors import ServiceStartError

    settings = load_settings(data_dir=tmp_path, redis={"port": services.redis.port})
    with pytest.raises(ServiceStartError, match="already in use"):
        Launcher(settings).up(["redis"])


def test_the_local_redis_requires_its_generated_password(tmp_path: Path) -> None:
    import pytest

    settings = load_settings(data_dir=tmp_path, redis={"port": _free_port()})
    launcher = Launcher(settings)
    launcher.up(["redis"])
    try:
        secret = settings.redis.password_file
        assert secret is not None and secret.stat().st_mode & 0o777 == 0o600
        assert (tmp_path / "services" / "redis" / "redis.conf").stat().st_mode & 0o777 == 0o600
        anonymous = redis.Redis(host="127.0.0.1", port=settings.redis.port, socket_timeout=2)
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        anonymous.close()
        assert redis.Redis.from_url(settings.redis.effective_url).ping()
        assert "****" in settings.masked()["effective"]["redis_url"]
        password = secret.read_text()
        launcher.down(["redis"])
        launcher.up(["redis"])  # a restart keeps the password (and the data it guards)
        assert secret.read_text() == password
    finally:
        launcher.down(["redis"])


def test_cli_postgres_up_status_down_with_the_catalog_on_it(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """`k2 services up/status/down postgres` on a server of its own; the catalog lives through a restart
    and a crash; the password is generated, private, required and never printed."""
    import json
    import shutil
    import tempfile

    import pytest
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    home = Path(tempfile.mkdtemp(prefix="k2-pgcli-"))
    home.chmod(0o711)  # under root the server runs as 'postgres', which must reach its directory
    port = _free_port()
    monkeypatch.setenv("K2_DATA_DIR", str(home))
    monkeypatch.setenv("K2_POSTGRES__PORT", str(port))
    monkeypatch.setenv("K2_LAKE__CATALOG", "postgres")
    settings = load_settings()
    runner = CliRunner()

    def status() -> tuple[int, dict[str, object]]:
        result = runner.invoke(app, ["services", "status", "postgres", "--json"])
        (entry,) = json.loads(result.output)
        return result.exit_code, entry

    def catalog_tables() -> int:
        engine = create_engine(settings.catalog_uri)
        try:
            with engine.connect() as conn:
                return int(conn.execute(text("SELECT count(*) FROM iceberg_tables")).scalar_one())
        finally:
            engine.dispose()

    try:
        result = runner.invoke(app, ["services", "up", "postgres"])
        assert result.exit_code == 0 and "running" in result.output, result.output
        code, entry = status()
        assert code == 0 and entry["state"] == "running" and str(entry["version"]).startswith("15")
        server = psutil.Process(int(str(entry["pid"])))
        assert server.username() == ("postgres" if os.geteuid() == 0 else psutil.Process().username())
        secret = settings.postgres.password_file
        assert secret is not None and secret.stat().st_mode & 0o777 == 0o600
        password = secret.read_text().strip()
        wrong = create_engine(settings.catalog_uri.replace(password, "wrong"))
        with pytest.raises(OperationalError, match="password authentication failed"):
            wrong.connect()
        wrong.dispose()

        result = runner.invoke(app, ["lake", "init"])
        assert result.exit_code == 0, result.output
        assert catalog_tables() == 4
        shown = runner.invoke(app, ["config", "show", "--json"]).output
        assert password not in shown and f"postgresql+psycopg2://k2:****@127.0.0.1:{port}/k2" in shown

        catalog = open_catalog(
            settings
        )  # a long-lived client, like `k2 ingest`: its pool outlives the server
        assert catalog.load_table("k2.trades").current_snapshot() is None
        result = runner.invoke(app, ["services", "down", "postgres"])
        assert result.exit_code == 0 and "stopped" in result.output
        assert not psutil.pid_exists(server.pid)
        code, entry = status()
        assert code == 1 and entry["state"] == "stopped"

        assert runner.invoke(app, ["services", "up", "postgres"]).exit_code == 0
        code, entry = status()
        assert code == 0 and entry["pid"] != server.pid
        assert catalog_tables() == 4  # the catalog survived the restart
        assert catalog.load_table("k2.trades").name() == ("k2", "trades")  # and so did the client
        os.kill(int(str(entry["pid"])), signal.SIGKILL)
        psutil.Process(int(str(entry["pid"]))).wait(10)
        code, entry = status()
        assert code == 1 and entry["state"] == "stale"
        assert runner.invoke(app, ["services", "up", "postgres"]).exit_code == 0  # crash recovery
        assert catalog_tables() == 4
        assert "database system is ready" in runner.invoke(app, ["services", "logs", "postgres"]).output
    finally:
        runner.invoke(app, ["services", "down"])
        shutil.rmtree(home, ignore_errors=True)
