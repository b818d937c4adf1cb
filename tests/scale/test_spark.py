"""A third-party engine reads K2's tables (issue #16, item 5): Spark through Iceberg's JDBC catalog,
on SQLite and on PostgreSQL with the warehouse on local disk, and on PostgreSQL with the warehouse on
a real S3 server (SeaweedFS from K2's launcher, read through Iceberg's S3FileIO).

The ASX sample goes through K2's own path (Kafka from K2's launcher, the pipeline, several Iceberg
commits); Spark then opens the same catalog and warehouse from K2's Settings, and its answers are
compared with K2's API over a real socket. DuckDB's iceberg extension is tried too, where it loads.

Marked ``scale``: pyspark is the optional ``scale`` extra and a Spark JVM is heavy for a 2-core
machine, so ``make test`` leaves these out and ``make scale-test`` runs them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import duckdb
import pytest

from benchmarks.spark_check import (
    Verdict,
    compare,
    ingest_asx,
    k2_table,
    run_checks,
    serve_api,
    spark_bars,
    spark_trades,
)
from k2.config import Settings, load_settings
from k2.lake import open_catalog
from k2.services.jars import SparkJars
from tests.conftest import S3_BUCKET

pytestmark = pytest.mark.scale


@pytest.fixture(scope="module", params=["sqlite", "postgres", "postgres-s3"])
def lake(
    services: Settings,
    tmp_path_factory: pytest.TempPathFactory,
    asx_data: Path,
    request: pytest.FixtureRequest,
) -> Settings:
    """A fresh K2 lake holding the whole ASX sample, ingested in commits of 50,000 rows; its catalog
    on SQLite, then on the session's PostgreSQL (Iceberg's JDBC catalog reads both), then on
    PostgreSQL with the warehouse under a prefix of its own on the session's S3 server."""
    tag = uuid.uuid4().hex[:8]
    catalog: dict[str, object] = {}
    storage: dict[str, Any] = {}
    if request.param.startswith("postgres"):
        pg: Settings = request.getfixturevalue("postgres")
        catalog = {"catalog_uri": pg.catalog_uri, "namespace": f"t{tag}"}
    if request.param.endswith("-s3"):
        s3: Settings = request.getfixturevalue("s3_server")
        catalog["warehouse"] = f"s3://{S3_BUCKET}/spark-{tag}"
        storage = {"s3": s3.s3.model_dump()}
    settings = load_settings(
        data_dir=tmp_path_factory.mktemp("k2-spark") / "k2",
        kafka={**services.kafka.model_dump(), "topic_prefix": f"t{tag}."},
        redis={**services.redis.model_dump(), "key_prefix": f"t{tag}:"},
        pipeline={"group_id": f"g{tag}"},
        lake={"commit_rows": 50_000, "maintain_every_s": 0, **catalog},
        # the in-process ingest is set-up here, not a load test: the governor's memory signal reads
        # this pytest process's RSS (Spark and earlier modules' tables), and once deferred tier 3
        # until the run's time limit, leaving rows in the spill
        resilience={"enabled": False},
        **storage,
    )
    produced = ingest_asx(settings, asx_data)
    table = open_catalog(settings).load_table(f"{settings.lake.namespace}.trades")
    assert table.scan().count() == produced == 200_545  # every trade of the sample, once
    assert table.location().startswith(settings.warehouse)  # on S3 for the -s3 param, not local disk
    assert (settings.data_dir / "warehouse").exists() == (settings.warehouse.startswith("file://"))
    assert len(table.snapshots()) >= 3  # history to travel in
    return settings


@pytest.fixture(scope="module")
def spark(lake: Settings) -> Iterator[Any]:
    from k2.services.spark import spark_session

    session = spark_session(lake, driver_memory="1g")
    try:
        yield session
    finally:
        session.stop()


@pytest.fixture(scope="module")
def api(lake: Settings) -> Iterator[str]:
    with serve_api(lake) as base_url:
        yield base_url


def _print(verdicts: list[Verdict]) -> None:
    for verdict in verdicts:
        print(verdict)


def test_spark_sees_k2s_catalog_and_jars_are_pinned(spark: Any, lake: Settings) -> None:
    tables = {
        r.tableName
        for r in spark.sql(f"SHOW TABLES IN {lake.lake.catalog_name}.{lake.lake.namespace}").collect()
    }
    assert {"trades", "quotes", "sequence_gaps"} <= tables
    jars = SparkJars(lake.cache_dir)
    assert jars.cached() and len(jars.pinned()) == 4  # the runtime, two JDBC drivers, the AWS bundle
    jars.verify()  # what Spark loaded is what the repository pins
    loaded = {Path(j).name for j in spark.conf.get("spark.jars").split(",")}
    assert loaded == set(jars.pinned())  # the AWS bundle on every lake: one JVM serves all three params
    assert spark_trades(spark, lake).num_rows == 200_545


def test_spark_bars_and_time_travel_equal_k2(spark: Any, lake: Settings, api: str) -> None:
    verdicts = run_checks(spark, lake, api, interval="1m")
    _print(verdicts)
    assert [v.ok for v in verdicts] == [True] * 4, "\n".join(map(str, verdicts))
    bars, rows, _, _ = verdicts
    assert bars.k2_rows > 3_000 and "vwap" in bars.columns and "trades" in bars.columns
    assert 0 < rows.k2_rows < 200_545


def test_a_wrong_snapshot_is_told_apart(spark: Any, lake: Settings, api: str) -> None:
    """The comparison can fail: Spark at the first snapshot against K2 at the head differs."""
    table = open_catalog(lake).load_table(f"{lake.lake.namespace}.trades")
    first = min(table.snapshots(), key=lambda s: s.sequence_number or 0).snapshot_id
    window = {"symbols": "BHP", "start": "2014-03-01T00:00:00+00:00", "end": "2014-03-29T00:00:00+00:00"}
    verdict = compare(
        "BHP bars, Spark at the first snapshot, K2 at the head",
        k2_table(api, "/v1/bars", {**window, "interval": "1m"}),
        spark_bars(spark, lake, ["BHP"], 60_000_000, first),
        ("exchange", "symbol", "start"),
    )
    print(verdict)
    assert not verdict.ok and (verdict.only_k2 or verdict.differing)


def test_duckdb_iceberg_extension_where_it_loads(lake: Settings) -> None:
    """DuckDB's own Iceberg reader on K2's metadata, when its extension can be installed here (and,
    for an S3 warehouse, when DuckDB's httpfs can be pointed at K2's S3 server)."""
    con = duckdb.connect()
    try:
        con.execute("INSTALL iceberg")
        con.execute("LOAD iceberg")
    except duckdb.Error as exc:
        pytest.skip(f"DuckDB's iceberg extension does not load here: {exc}")
    if lake.warehouse.startswith("s3://"):
        endpoint = urlsplit(lake.s3.effective_endpoint)
        try:
            con.execute("INSTALL httpfs")
            con.execute("LOAD httpfs")
            options = {"KEY_ID": lake.s3.access_key_id, "SECRET": lake.s3.secret() or "",
                       "REGION": lake.s3.region, "ENDPOINT": endpoint.netloc}  # fmt: skip
            quoted = ", ".join(f"{k} '{v.replace(chr(39), chr(39) * 2)}'" for k, v in options.items())
            use_ssl = "true" if endpoint.scheme == "https" else "false"
            con.execute(f"CREATE SECRET k2_s3 (TYPE s3, {quoted}, URL_STYLE 'path', USE_SSL {use_ssl})")
        except duckdb.Error as exc:
            pytest.skip(f"DuckDB cannot read K2's S3 server here: {exc}")
    table = open_catalog(lake).load_table(f"{lake.lake.namespace}.trades")
    count = con.execute("SELECT count(*) FROM iceberg_scan(?)", [table.metadata_location]).fetchone()
    assert count is not None and count[0] == table.scan().count()
