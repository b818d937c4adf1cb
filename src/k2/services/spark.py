"""Apache Spark reading K2's tables through Iceberg's JDBC catalog: the same catalog, the same warehouse.

K2's tables are plain Iceberg, so a third-party engine needs no export: Iceberg's Spark runtime
opens the very catalog rows pyiceberg's ``SqlCatalog`` writes (table ``iceberg_tables``, keyed by
catalog name), and reads the warehouse's metadata and Parquet files itself. Everything Spark is
told comes from K2's ``Settings``: the SQLAlchemy catalog URI becomes a JDBC URL (SQLite file today,
PostgreSQL when configured, its user and password passed as ``jdbc.*`` properties, never in the
URL), the warehouse is passed through, and the Spark catalog is named after ``lake.catalog_name``
because the JDBC catalog only sees rows whose ``catalog_name`` equals its own name.

Spark's catalog is read-mostly here: K2 stays the only writer. ``jdbc.schema-version`` is left
unset, so Iceberg takes the catalog tables as pyiceberg created them (with ``iceberg_type``) and
alters nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from k2.config import Settings
from k2.errors import ConfigError
from k2.services.errors import SparkMissingError
from k2.services.jars import SparkJars

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["jdbc_catalog", "spark_conf", "spark_session"]

#: Iceberg's Spark catalog and SQL extensions (VERSION AS OF, CALL system.*).
_SPARK_CATALOG = "org.apache.iceberg.spark.SparkCatalog"
_EXTENSIONS = "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions"


def jdbc_catalog(catalog_uri: str) -> dict[str, str]:
    """Iceberg JDBC catalog properties (``uri``, ``jdbc.user``, ``jdbc.password``) for a SQLAlchemy URI.

    ``sqlite:////abs/catalog.db`` becomes ``jdbc:sqlite:/abs/catalog.db``;
    ``postgresql+psycopg2://user:pw@host:5432/db`` becomes ``jdbc:postgresql://host:5432/db`` with the
    credentials as properties (a JDBC URL with them inline would show up in Spark's UI and logs).

    Raises:
        ConfigError: a scheme Iceberg's JDBC catalog has no driver for in K2's jar list.
    """
    parts = urlsplit(catalog_uri)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme == "sqlite":
        # SQLAlchemy: sqlite:///relative.db or sqlite:////absolute.db; JDBC: jdbc:sqlite:<path>
        return {"uri": f"jdbc:sqlite:{catalog_uri.split(':///', 1)[1]}"}
    if scheme in ("postgresql", "postgres"):
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
        props = {"uri": f"jdbc:postgresql://{host}{port}{parts.path}"}
        if parts.username:
            props["jdbc.user"] = unquote(parts.username)
        if parts.password:
            props["jdbc.password"] = unquote(parts.password)
        return props
    raise ConfigError(
        f"Spark cannot open a {scheme!r} catalog: K2 ships JDBC drivers for SQLite and PostgreSQL"
    )


def spark_conf(
    settings: Settings,
    jars: SparkJars,
    *,
    driver_memory: str = "1g",
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The Spark configuration that reads K2's catalog and warehouse (what docs/operations.md prints).

    ``extra`` adds or overrides keys, e.g. an S3 warehouse's ``spark.sql.catalog.<name>.io-impl``
    and ``s3.*`` properties with ``iceberg-aws-bundle`` on the class path.
    """
    name = settings.lake.catalog_name
    prefix = f"spark.sql.catalog.{name}"
    conf = {
        "spark.jars": ",".join(str(p) for p in jars.paths()),
        "spark.sql.extensions": _EXTENSIONS,
        prefix: _SPARK_CATALOG,
        f"{prefix}.type": "jdbc",
        f"{prefix}.warehouse": settings.warehouse,
        "spark.sql.defaultCatalog": name,
        # K2 stores instants (timestamptz) and prints them in UTC; so does this session.
        "spark.sql.session.timeZone": "UTC",
        "spark.driver.memory": driver_memory,
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.shuffle.partitions": "4",
    }
    conf.update({f"{prefix}.{key}": value for key, value in jdbc_catalog(settings.catalog_uri).items()})
    conf.update(extra or {})
    return conf


def spark_session(
    settings: Settings,
    *,
    master: str = "local[2]",
    driver_memory: str = "1g",
    extra: Mapping[str, str] | None = None,
) -> SparkSession:
    """A Spark session on K2's catalog, its jars fetched and verified first (Maven, K2's cache).

    A small local driver by default: K2's single machine has 2 cores shared with Kafka and the API.

    Raises:
        SparkMissingError: pyspark is not installed (``pip install 'k2[scale]'``).
        JarDownloadError: the Iceberg runtime or a JDBC driver could not be fetched or verified.
        ConfigError: the catalog URI has no JDBC driver here.
    """
    try:
        from pyspark.sql import SparkSession
    except ModuleNotFoundError as exc:
        raise SparkMissingError(
            "pyspark is not installed; it is K2's optional extra: pip install 'k2[scale]'", service="spark"
        ) from exc
    jars = SparkJars(settings.cache_dir)
    jars.ensure()
    builder: Any = SparkSession.builder.master(master).appName("k2-spark")
    for key, value in spark_conf(settings, jars, driver_memory=driver_memory, extra=extra).items():
        builder = builder.config(key, value)
    session: SparkSession = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session
