"""Apache Spark reading K2's tables through Iceberg's JDBC catalog: the same catalog, the same warehouse.

K2's tables are plain Iceberg, so a third-party engine needs no export: Iceberg's Spark runtime
opens the very catalog rows pyiceberg's ``SqlCatalog`` writes (table ``iceberg_tables``, keyed by
catalog name), and reads the warehouse's metadata and Parquet files itself. Everything Spark is
told comes from K2's ``Settings``: the SQLAlchemy catalog URI becomes a JDBC URL (SQLite file today,
PostgreSQL when configured, its user and password passed as ``jdbc.*`` properties, never in the
URL), the warehouse is passed through, and the Spark catalog is named after ``lake.catalog_name``
because the JDBC catalog only sees rows whose ``catalog_name`` equals its own name. A warehouse on
S3 (``s3://bucket/prefix``) is read through Iceberg's ``S3FileIO`` (the AWS bundle on the class
path) with the endpoint, region and keys of K2's ``s3`` section, path-style as SeaweedFS and MinIO
need; the secret key is a catalog property like the JDBC password, masked wherever the conf is shown.

Spark's catalog is read-mostly here: K2 stays the only writer. ``jdbc.schema-version`` is left
unset, so Iceberg takes the catalog tables as pyiceberg created them (with ``iceberg_type``) and
alters nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from k2.config import Settings
from k2.errors import ConfigError
from k2.services.errors import SparkMissingError
from k2.services.jars import SparkJars

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["is_secret", "jdbc_catalog", "s3_file_io", "spark_conf", "spark_session"]

#: Iceberg's Spark catalog and SQL extensions (VERSION AS OF, CALL system.*).
_SPARK_CATALOG = "org.apache.iceberg.spark.SparkCatalog"
_EXTENSIONS = "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions"
#: Iceberg's own S3 client (iceberg-aws-bundle): no Hadoop S3A, no core-site.xml.
_S3_FILE_IO = "org.apache.iceberg.aws.s3.S3FileIO"
_HADOOP_FILE_IO = "org.apache.iceberg.hadoop.HadoopFileIO"
_S3_SCHEMES = ("s3", "s3a", "s3n")
#: Conf keys whose values are credentials (Spark's own spark.redaction.regex, plus Iceberg's names).
_SECRET_KEY = re.compile(r"password|secret|token|credential|access[.]key", re.I)


def is_secret(key: str) -> bool:
    """Whether a Spark conf key holds a credential (its value is masked wherever the conf is shown)."""
    return bool(_SECRET_KEY.search(key))


def s3_file_io(settings: Settings) -> dict[str, str]:
    """Iceberg catalog properties reading an ``s3://`` warehouse (Hadoop's FileIO for local disk).

    The region is always given (a local server cannot answer AWS's region lookup); the keys are left
    out for an external endpoint without a configured secret, so AWS's own chain supplies them, as
    K2's pyiceberg FileIO does (``k2.lake.storage.s3_properties``).

    Raises:
        ConfigError: the warehouse is on K2's local S3 server, whose secret does not exist yet.
    """
    if urlsplit(settings.warehouse).scheme not in _S3_SCHEMES:
        # Said, not left to the default: a session opened after an S3 one in the same process (one
        # JVM) kept that session's S3FileIO and asked S3 for a local path ("Bucket cannot be empty").
        return {"io-impl": _HADOOP_FILE_IO}
    s3 = settings.s3
    props = {
        "io-impl": _S3_FILE_IO,
        "s3.endpoint": s3.effective_endpoint,
        "s3.path-style-access": "true",
        "client.region": s3.region,
    }
    secret = s3.secret()
    if secret is None:
        if s3.managed:
            raise ConfigError(
                f"the warehouse is on K2's local S3 server, which has not been started from this data "
                f"directory yet (no secret at {s3.secret_file}); run `k2 services up s3`, or set "
                "K2_S3__ENDPOINT and K2_S3__SECRET_ACCESS_KEY for another S3"
            )
        return props
    props["s3.access-key-id"] = s3.access_key_id
    props["s3.secret-access-key"] = secret
    return props


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
    """The Spark configuration that reads K2's catalog and warehouse, local or on S3.

    Credentials are in it (``jdbc.password``, ``s3.secret-access-key``): show it through
    ``is_secret``, as ``python -m benchmarks.spark_check --conf`` does. ``extra`` adds or overrides keys.

    Raises:
        ConfigError: no JDBC driver for the catalog, or the local S3 server has no secret yet.
    """
    name = settings.lake.catalog_name
    prefix = f"spark.sql.catalog.{name}"
    conf = {
        # All four, the AWS bundle too on a local warehouse: pyspark keeps one JVM per Python process,
        # its driver class path fixed by the first session, so a later S3 session could not add it.
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
    conf.update({f"{prefix}.{key}": value for key, value in s3_file_io(settings).items()})
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
        JarDownloadError: the Iceberg runtime, a JDBC driver or the AWS bundle could not be fetched
            or verified.
        ConfigError: the catalog URI has no JDBC driver here, or the local S3 server has no secret.
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
