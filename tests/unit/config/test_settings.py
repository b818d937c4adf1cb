"""The one Settings object: defaults, environment, TOML file, and clear errors for bad values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from k2.config import load_settings
from k2.errors import ConfigError


def test_defaults_work_on_one_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert s.data_dir == tmp_path / ".k2"
    assert s.kafka.managed and s.kafka.bootstrap == "127.0.0.1:19092"
    assert s.kafka.port != 9092  # never clash with a user's own Kafka
    assert s.redis.managed and s.redis.effective_url == "redis://127.0.0.1:16379/0"
    assert s.catalog_uri == f"sqlite:///{tmp_path / '.k2' / 'catalog.db'}"
    assert s.warehouse == f"file://{tmp_path / '.k2' / 'warehouse'}"
    assert s.kafka.topic("trades") == "k2.trades"


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("K2_KAFKA__PORT", "29092")
    monkeypatch.setenv("K2_STATE__BACKEND", "redis")
    monkeypatch.setenv("K2_LOG__LEVEL", "debug")
    monkeypatch.setenv("K2_DATA_DIR", str(tmp_path / "d"))
    s = load_settings()
    assert s.kafka.port == 29092 and s.kafka.bootstrap == "127.0.0.1:29092"
    assert s.state.backend == "redis"
    assert s.log.level == "DEBUG"
    assert s.data_dir == tmp_path / "d"


def test_toml_file_and_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "site.toml"
    cfg.write_text('[kafka]\nbootstrap_servers = "broker-a:9092,broker-b:9092"\npartitions = 12\n'
                   '[api]\nport = 9000\n')  # fmt: skip
    s = load_settings(cfg)
    assert not s.kafka.managed and s.kafka.bootstrap == "broker-a:9092,broker-b:9092"
    assert s.kafka.partitions == 12 and s.api.port == 9000
    monkeypatch.setenv("K2_API__PORT", "9100")  # environment beats the file
    assert load_settings(cfg).api.port == 9100


def test_k2_toml_in_working_directory_is_picked_up(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "k2.toml").write_text("[lake]\ncommit_interval_s = 2.5\n")
    assert load_settings().lake.commit_interval_s == 2.5


@pytest.mark.parametrize(
    ("env", "value", "named"),
    [
        ("K2_KAFKA__PORT", "abc", "K2_KAFKA__PORT"),
        ("K2_KAFKA__PORT", "70000", "less than or equal to 65535"),
        ("K2_STATE__BACKEND", "memcached", "'embedded' or 'redis'"),
        ("K2_KAFKA__VERSION", "3.7.0", "K2_KAFKA__VERSION"),
        ("K2_LAKE__COMMIT_INTERVAL_S", "-1", "K2_LAKE__COMMIT_INTERVAL_S"),
        ("K2_LOG__FORMAT", "xml", "K2_LOG__FORMAT"),
    ],
)
def test_bad_values_name_the_setting_and_the_accepted_form(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: str, value: str, named: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert named in str(info.value)
    assert env in str(info.value)


def test_unknown_key_in_file_is_an_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[kafka]\nbootstrap = 'x:1'\n")
    with pytest.raises(ConfigError, match=r"kafka\.bootstrap"):
        load_settings(cfg)


def test_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[kafka\n")
    with pytest.raises(ConfigError):
        load_settings(broken)


def test_secrets_are_masked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("K2_REDIS__URL", "redis://app:hunter2@cache:6379/0")
    monkeypatch.setenv("K2_LAKE__CATALOG_URI", "postgresql+psycopg2://k2:s3cret@db/iceberg")
    monkeypatch.setenv("K2_API__API_KEYS", '["key-one"]')
    s = load_settings()
    text = repr(s.masked())
    assert "hunter2" not in text and "s3cret" not in text and "key-one" not in text
    assert s.redis.effective_url == "redis://app:hunter2@cache:6379/0"
    assert s.masked()["effective"]["redis_url"] == "redis://app:****@cache:6379/0"


def test_the_local_postgres_catalog_uri_carries_its_generated_password_masked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("K2_LAKE__CATALOG", "postgres")
    monkeypatch.setenv("K2_POSTGRES__PORT", "25432")
    s = load_settings(data_dir=tmp_path)
    assert s.postgres.password_file == tmp_path / "services" / "postgres" / "password"
    assert s.catalog_uri == "postgresql+psycopg2://k2@127.0.0.1:25432/k2"  # before the first start
    s.postgres.password_file.parent.mkdir(parents=True)
    s.postgres.password_file.write_text("pg/s3cret@x\n")  # generated ones are URL-safe; any is quoted
    assert s.catalog_uri == "postgresql+psycopg2://k2:pg%2Fs3cret%40x@127.0.0.1:25432/k2"
    masked = s.masked()
    assert "s3cret" not in repr(masked)
    assert masked["effective"]["catalog_uri"] == "postgresql+psycopg2://k2:****@127.0.0.1:25432/k2"
    assert masked["lake"]["catalog"] == "postgres"
    # an explicit URI beats the local server, and stays a secret
    external = load_settings(data_dir=tmp_path, lake={"catalog_uri": "postgresql+psycopg2://u:pw2@db/c"})
    assert external.catalog_uri.endswith("@db/c") and "pw2" not in repr(external.masked())


def test_settings_are_frozen(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path)
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises ValidationError for frozen models
        s.kafka.port = 1  # type: ignore[misc]


def test_kafka_client_secrets_and_url_credentials_are_masked(tmp_path: Path) -> None:
    s = load_settings(
        data_dir=tmp_path,
        kafka={
            "schema_registry_url": "https://reg-user:reg-pass@registry:8081",
            "client": {
                "security.protocol": "SASL_SSL",
                "sasl.mechanism": "PLAIN",
                "sasl.username": "alice",
                "sasl.password": "kafka-pass",
                "ssl.key.password": "key-pass",
                "sasl.jaas.config": "org.apache... password='jaas-pass';",
                "sasl.oauthbearer.client.secret": "oauth-secret",
            },
        },
    )
    masked = s.masked()
    text = repr(masked)
    for secret in ("kafka-pass", "key-pass", "jaas-pass", "oauth-secret", "reg-pass"):
        assert secret not in text, secret
    assert masked["kafka"]["client"]["sasl.username"] == "alice"  # not a secret: still shown
    assert masked["kafka"]["schema_registry_url"] == "https://reg-user:****@registry:8081"
    assert s.kafka.client["sasl.password"] == "kafka-pass"  # the settings themselves are intact


@pytest.mark.parametrize(
    ("overrides", "secret"),
    [
        ({"redis": {"url": 12345.5}}, "12345.5"),
        ({"api": {"api_keys": "not-a-list-s3cret"}}, "not-a-list-s3cret"),
        ({"kafka": {"client": {"sasl.password": 42}}}, "42"),
        ({"lake": {"catalog_uri": ["pg://u:s3cret@h/db"]}}, "s3cret"),
    ],
)
def test_a_rejected_secret_is_not_echoed(tmp_path: Path, overrides: dict[str, Any], secret: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(data_dir=tmp_path, **overrides)
    assert secret not in str(info.value) and "value hidden" in str(info.value)


def test_a_rejected_plain_value_is_still_shown(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"got 'abc'"):
        load_settings(data_dir=tmp_path, kafka={"port": "abc"})


def test_maintenance_and_retention_are_on_by_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    lake = load_settings().lake
    assert lake.maintain_every_s == 60.0
    assert lake.time_travel_hours == 168 and lake.checkpoint_minutes == 15
    assert lake.metadata_versions_kept == 20 and lake.target_file_mb == 128
    kafka = load_settings().kafka
    assert kafka.retention_ms == 7 * 24 * 3600 * 1000 and kafka.segment_ms == 3600 * 1000


def test_maintenance_can_be_switched_off_in_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "k2.toml").write_text("[lake]\nmaintain_every_s = 0.5\n")
    assert load_settings().lake.maintain_every_s == 0.5
    monkeypatch.setenv("K2_LAKE__MAINTAIN_EVERY_S", "0")  # off
    assert load_settings().lake.maintain_every_s == 0
    monkeypatch.setenv("K2_LAKE__MAINTAIN_EVERY_S", "-1")
    with pytest.raises(ConfigError, match="K2_LAKE__MAINTAIN_EVERY_S"):
        load_settings()
