"""Spark's view of K2's catalog and warehouse: the JDBC URL, the S3 FileIO properties derived from
K2's Settings, the masking of their credentials, and the pins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from k2.config import load_settings
from k2.errors import ConfigError
from k2.services.errors import JarDownloadError
from k2.services.jars import SparkJars
from k2.services.spark import is_secret, jdbc_catalog, s3_file_io, spark_conf


def test_sqlite_catalog_is_the_same_file() -> None:
    assert jdbc_catalog("sqlite:////srv/k2/catalog.db") == {"uri": "jdbc:sqlite:/srv/k2/catalog.db"}
    assert jdbc_catalog("sqlite:///catalog.db") == {"uri": "jdbc:sqlite:catalog.db"}


def test_postgres_credentials_leave_the_url() -> None:
    props = jdbc_catalog("postgresql+psycopg2://k2:p%40ss@db.internal:5433/lake")
    assert props == {
        "uri": "jdbc:postgresql://db.internal:5433/lake",
        "jdbc.user": "k2",
        "jdbc.password": "p@ss",
    }
    assert jdbc_catalog("postgresql://db/lake") == {"uri": "jdbc:postgresql://db/lake"}


def test_other_catalogs_are_refused() -> None:
    with pytest.raises(ConfigError, match="'mysql'"):
        jdbc_catalog("mysql+pymysql://h/db")


def test_conf_names_the_catalog_after_k2s_and_uses_its_local_warehouse(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "k2", lake={"catalog_name": "research"})
    conf = spark_conf(settings, SparkJars(tmp_path / "cache"), extra={"spark.driver.memory": "2g"})
    assert conf["spark.sql.catalog.research"] == "org.apache.iceberg.spark.SparkCatalog"
    assert conf["spark.sql.catalog.research.type"] == "jdbc"
    assert conf["spark.sql.catalog.research.uri"] == f"jdbc:sqlite:{tmp_path / 'k2' / 'catalog.db'}"
    assert conf["spark.sql.catalog.research.warehouse"] == f"file://{tmp_path / 'k2' / 'warehouse'}"
    assert conf["spark.driver.memory"] == "2g"  # extra overrides
    jars = [Path(j).name for j in conf["spark.jars"].split(",")]
    assert [j.split("-")[0] for j in jars] == ["iceberg", "iceberg", "postgresql", "sqlite"]
    assert jars[0] == "iceberg-aws-bundle-1.10.1.jar"  # always: the first session fixes the JVM's class path
    assert not any(".s3." in k for k in conf)
    assert (
        conf["spark.sql.catalog.research.io-impl"] == "org.apache.iceberg.hadoop.HadoopFileIO"
    )  # said, not left over
    assert not any(k.startswith("spark.jars.packages") for k in conf)  # never past the pins


def test_an_s3_warehouse_is_read_through_s3fileio_with_k2s_endpoint_and_keys(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path / "k2",
        lake={"warehouse": "s3://bucket/wh"},
        s3={"port": 19333, "region": "ap-southeast-2", "access_key_id": "AK"},
    )
    settings.s3.secret_file.parent.mkdir(parents=True)  # type: ignore[union-attr]
    settings.s3.secret_file.write_text("s3cr3t\n")  # type: ignore[union-attr]
    conf = spark_conf(settings, SparkJars(tmp_path / "cache"))
    prefix = "spark.sql.catalog.k2"
    assert conf[f"{prefix}.warehouse"] == "s3://bucket/wh"
    assert {k.removeprefix(f"{prefix}."): v for k, v in conf.items() if k.startswith(f"{prefix}.s3.")} == {
        "s3.endpoint": "http://127.0.0.1:19333",
        "s3.path-style-access": "true",
        "s3.access-key-id": "AK",
        "s3.secret-access-key": "s3cr3t",
    }
    assert conf[f"{prefix}.io-impl"] == "org.apache.iceberg.aws.s3.S3FileIO"
    assert conf[f"{prefix}.client.region"] == "ap-southeast-2"
    shown = {k for k in conf if is_secret(k)}
    assert shown == {f"{prefix}.s3.secret-access-key"}  # the only credential here (SQLite catalog)


def test_an_external_s3_without_a_secret_leaves_the_keys_to_aws(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path / "k2",
        lake={"warehouse": "s3://bucket/wh"},
        s3={"endpoint": "https://s3.ap-southeast-2.amazonaws.com"},
    )
    props = s3_file_io(settings)
    assert props["s3.endpoint"] == "https://s3.ap-southeast-2.amazonaws.com"
    assert "s3.access-key-id" not in props and "s3.secret-access-key" not in props
    configured = load_settings(
        data_dir=tmp_path / "k2",
        lake={"warehouse": "s3://bucket/wh"},
        s3={"endpoint": "https://minio:9000", "secret_access_key": "pw"},
    )
    assert s3_file_io(configured)["s3.secret-access-key"] == "pw"


def test_the_local_s3_server_not_started_yet_is_said_plainly(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "k2", lake={"warehouse": "s3://bucket/wh"})
    with pytest.raises(ConfigError, match="k2 services up s3"):
        spark_conf(settings, SparkJars(tmp_path / "cache"))


def test_credentials_are_told_apart_from_settings() -> None:
    for key in ("spark.sql.catalog.k2.jdbc.password", "spark.sql.catalog.k2.s3.secret-access-key"):
        assert is_secret(key)
    for key in ("spark.sql.catalog.k2.s3.access-key-id", "spark.sql.catalog.k2.s3.endpoint", "spark.jars"):
        assert not is_secret(key)


def test_the_printed_conf_masks_the_s3_secret_and_the_catalog_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks.spark_check import main

    monkeypatch.setenv("K2_LAKE__WAREHOUSE", "s3://bucket/wh")
    monkeypatch.setenv("K2_LAKE__CATALOG_URI", "postgresql+psycopg2://k2:pg-pw@db:5432/lake")
    monkeypatch.setenv("K2_S3__ENDPOINT", "http://minio:9000")
    monkeypatch.setenv("K2_S3__SECRET_ACCESS_KEY", "s3-secret")
    monkeypatch.setenv("K2_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["--conf", "--data-dir", str(tmp_path / "k2")]) == 0
    out = capsys.readouterr().out
    assert "s3-secret" not in out and "pg-pw" not in out
    assert "spark.sql.catalog.k2.s3.secret-access-key=**********" in out
    assert "spark.sql.catalog.k2.jdbc.password=**********" in out
    assert "spark.sql.catalog.k2.s3.endpoint=http://minio:9000" in out


def test_a_cache_fetched_before_a_jar_was_pinned_is_refetched(tmp_path: Path) -> None:
    jars = SparkJars(tmp_path)
    assert not jars.cached()
    jars.libs.mkdir(parents=True)
    older = {n: d for n, d in jars.pinned().items() if not n.startswith("iceberg-aws-bundle-")}
    jars.manifest.write_text(json.dumps({"label": jars.label, "sha256": older}))
    assert len(older) == 3 and not jars.cached()  # ensure() fetches again rather than fail on the bundle
    jars.manifest.write_text(json.dumps({"label": jars.label, "sha256": jars.pinned()}))
    assert jars.cached()


def test_unpinned_spark_version_is_refused_before_any_download(tmp_path: Path) -> None:
    jars = SparkJars(tmp_path, spark_minor="9.9")
    with pytest.raises(JarDownloadError, match="no pinned jar checksums"):
        jars.ensure()
    assert not any(tmp_path.iterdir())


def test_an_altered_jar_fails_verification(tmp_path: Path) -> None:
    jars = SparkJars(tmp_path)
    jars.libs.mkdir(parents=True)
    for path in jars.paths():
        path.write_bytes(b"not the jar")
    with pytest.raises(JarDownloadError, match="pinned checksum"):
        jars.verify()
