"""Spark's view of K2's catalog: the JDBC URL and properties derived from K2's Settings, and the pins."""

from __future__ import annotations

from pathlib import Path

import pytest

from k2.config import load_settings
from k2.errors import ConfigError
from k2.services.errors import JarDownloadError
from k2.services.jars import SparkJars
from k2.services.spark import jdbc_catalog, spark_conf


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


def test_conf_names_the_catalog_after_k2s_and_uses_its_warehouse(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path / "k2", lake={"catalog_name": "research", "warehouse": "s3://bucket/wh"}
    )
    conf = spark_conf(settings, SparkJars(tmp_path / "cache"), extra={"spark.driver.memory": "2g"})
    assert conf["spark.sql.catalog.research"] == "org.apache.iceberg.spark.SparkCatalog"
    assert conf["spark.sql.catalog.research.type"] == "jdbc"
    assert conf["spark.sql.catalog.research.uri"] == f"jdbc:sqlite:{tmp_path / 'k2' / 'catalog.db'}"
    assert conf["spark.sql.catalog.research.warehouse"] == "s3://bucket/wh"
    assert conf["spark.driver.memory"] == "2g"  # extra overrides
    jars = conf["spark.jars"].split(",")
    assert [Path(j).name.split("-")[0] for j in jars] == ["iceberg", "postgresql", "sqlite"]
    assert not any(k.startswith("spark.jars.packages") for k in conf)  # never past the pins


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
