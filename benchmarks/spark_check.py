"""Spark reads K2's tables: its bars equal K2's ``/v1/bars``, its time travel equals K2's (issue #16, 5).

    python -m benchmarks.spark_check [--data-dir DIR] [--interval 1m]
    python -m benchmarks.spark_check --conf [--data-dir DIR]    # only print the Spark configuration

Without ``--data-dir``: K2's launcher starts a throwaway Kafka, the ASX sample's trades are produced
to it and ingested by K2's own pipeline (several commits, so there is history to travel in). With
``--data-dir``: an existing K2 lake is checked as it is. Either way K2's API is served in-process on
a free port, Spark (local[2], 1 GiB driver) opens the same catalog through Iceberg's JDBC catalog,
and four results are compared, each printed as one line:

1. bars at the head: every bucket in both, every field equal (decimals exactly, VWAP within 1e-9);
2. the rows at an earlier snapshot: ``VERSION AS OF <id>`` against ``/v1/trades?snapshot_id=<id>``;
3. bars at that snapshot (``/v1/bars?snapshot_id=<id>``);
4. that the snapshot holds fewer rows than the head, so (2) and (3) could tell them apart.

Spark's bars restate K2's definition (``k2.query.bars``) in Spark SQL: buckets start at the
exchange-local midnight, open/close are the first/last trade by (exchange_ts, sequence), VWAP is
sum(price * size) / sum(size) in doubles and ``trades`` counts trades. Exit status 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import uvicorn

from k2.config import Settings, derive, load_settings
from k2.lake import open_catalog
from k2.query.bars import MAX_INTERVAL_US, MIN_INTERVAL_US
from k2.query.params import parse_duration
from k2.services.process import free_port
from k2.types import EXCHANGE_TIMEZONES

__all__ = [
    "ASX_SAMPLE",
    "Verdict",
    "compare",
    "ingest_asx",
    "k2_table",
    "main",
    "run_checks",
    "serve_api",
    "spark_bars",
    "spark_trades",
]

ASX_SAMPLE = Path(__file__).resolve().parents[1] / "data" / "asx-2014-03"
_DAY_US = 86_400_000_000
#: VWAP is a ratio of double sums whose addition order differs between engines.
_FLOAT_REL = 1e-9


@dataclass
class Verdict:
    """One comparison of K2's rows with Spark's, by key."""

    name: str
    key: tuple[str, ...]
    columns: tuple[str, ...]
    k2_rows: int
    spark_rows: int
    only_k2: list[tuple[Any, ...]] = field(default_factory=list)
    only_spark: list[tuple[Any, ...]] = field(default_factory=list)
    #: (key, column, K2's value, Spark's value) of each differing field
    differing: list[tuple[tuple[Any, ...], str, Any, Any]] = field(default_factory=list)
    #: how the two sides are named when printed (the same check compares two K2 lakes too)
    sides: tuple[str, str] = ("K2", "Spark")

    @property
    def ok(self) -> bool:
        return self.k2_rows == self.spark_rows and not (self.only_k2 or self.only_spark or self.differing)

    def __str__(self) -> str:
        head = f"{'EQUAL' if self.ok else 'DIFFER'}  {self.name}"
        if self.columns:
            head += (
                f": {self.sides[0]} {self.k2_rows:,} rows, {self.sides[1]} {self.spark_rows:,}; "
                f"{len(self.columns)} columns compared ({', '.join(self.columns)})"
            )
        if self.ok:
            return head
        return (
            f"{head}\n    only in {self.sides[0]}: {len(self.only_k2)} {self.only_k2[:3]}\n"
            f"    only in {self.sides[1]}: {len(self.only_spark)} {self.only_spark[:3]}\n"
            f"    differing fields: {len(self.differing)} {self.differing[:3]}"
        )


def _normal(value: Any) -> Any:
    """One form per value whichever engine produced it: instants as aware UTC datetimes."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value


def _instant(epoch_us: int) -> datetime:
    """Epoch microseconds as an aware UTC datetime (pyspark's collect() would use the host's zone)."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=epoch_us)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        return math.isclose(float(a), float(b), rel_tol=_FLOAT_REL, abs_tol=0.0)
    return bool(a == b)  # Decimal("35.945000") == Decimal("35.945"): the scale does not matter


def compare(
    name: str, k2: pa.Table, spark: pa.Table, key: Sequence[str], *, sides: tuple[str, str] = ("K2", "Spark")
) -> Verdict:
    """K2's and Spark's tables compared by ``key`` on every column both have.

    Decimals must be equal exactly, floats within a relative 1e-9, everything else exactly; a key
    present twice on either side shows up as a row-count difference.
    """
    columns = tuple(c for c in k2.column_names if c in spark.column_names)

    def rows(table: pa.Table) -> dict[tuple[Any, ...], dict[str, Any]]:
        out: dict[tuple[Any, ...], dict[str, Any]] = {}
        for row in table.select(list(columns)).to_pylist():
            normal = {c: _normal(v) for c, v in row.items()}
            out[tuple(normal[c] for c in key)] = normal
        return out

    mine, theirs = rows(k2), rows(spark)
    verdict = Verdict(name, tuple(key), columns, k2.num_rows, spark.num_rows, sides=sides)
    verdict.only_k2 = sorted(set(mine) - set(theirs), key=repr)
    verdict.only_spark = sorted(set(theirs) - set(mine), key=repr)
    for k in sorted(set(mine) & set(theirs), key=repr):
        for column in columns:
            if not _same(mine[k][column], theirs[k][column]):
                verdict.differing.append((k, column, mine[k][column], theirs[k][column]))
    return verdict


def _zone_sql() -> str:
    cases = " ".join(f"WHEN '{exchange}' THEN '{zone}'" for exchange, zone in EXCHANGE_TIMEZONES.items())
    return f"CASE exchange {cases} ELSE 'UTC' END"


def _relation(settings: Settings, table: str, snapshot_id: int | None) -> str:
    name = f"{settings.lake.catalog_name}.{settings.lake.namespace}.{table}"
    return name if snapshot_id is None else f"{name} VERSION AS OF {int(snapshot_id)}"


def spark_bars(
    spark: Any, settings: Settings, symbols: Sequence[str], interval_us: int, snapshot_id: int | None = None
) -> pa.Table:
    """K2's bar definition in Spark SQL over the trades table (at ``snapshot_id`` when given).

    ``from_utc_timestamp`` shifts each instant to the exchange's wall clock, so its epoch
    microseconds are K2's ``local_us``; buckets are counted from that local midnight and shifted
    back with ``to_utc_timestamp``, as DuckDB's ``timezone()`` does in K2.
    """
    spark.createDataFrame([(s,) for s in symbols], "symbol STRING").createOrReplaceTempView("_k2_symbols")
    sql = f"""
        WITH src AS (
            SELECT exchange, symbol, exchange_ts, sequence, price, size, {_zone_sql()} AS zone,
                   unix_micros(from_utc_timestamp(exchange_ts, {_zone_sql()})) AS local_us
            FROM {_relation(settings, "trades", snapshot_id)}
            WHERE symbol IN (SELECT symbol FROM _k2_symbols)
        ), keyed AS (
            SELECT *, local_us - pmod(local_us, {_DAY_US}) AS day_us FROM src
        ), bucketed AS (
            SELECT *, day_us + div(local_us - day_us, {interval_us}) * {interval_us} AS bucket_us FROM keyed
        )
        SELECT exchange, symbol,
               CAST(timestamp_micros(day_us) AS DATE) AS session,
               to_utc_timestamp(timestamp_micros(bucket_us), zone) AS start,
               to_utc_timestamp(timestamp_micros(least(bucket_us + {interval_us}, day_us + {_DAY_US})), zone) AS `end`,
               min_by(price, struct(exchange_ts, sequence)) AS open,
               max(price) AS high,
               min(price) AS low,
               max_by(price, struct(exchange_ts, sequence)) AS close,
               sum(size) AS volume,
               sum(CAST(price AS DOUBLE) * CAST(size AS DOUBLE)) / CAST(sum(size) AS DOUBLE) AS vwap,
               count(*) AS trades
        FROM bucketed
        GROUP BY exchange, symbol, zone, day_us, bucket_us
        ORDER BY symbol, start, exchange
    """
    table: pa.Table = spark.sql(sql).toArrow()
    return table


def spark_trades(spark: Any, settings: Settings, snapshot_id: int | None = None) -> pa.Table:
    """Every row of the trades table, at ``snapshot_id`` when given (Iceberg time travel in Spark)."""
    table: pa.Table = spark.sql(f"SELECT * FROM {_relation(settings, 'trades', snapshot_id)}").toArrow()
    return table


def k2_table(base_url: str, path: str, params: dict[str, Any], *, page: int = 100_000) -> pa.Table:
    """A K2 API result as Arrow (``format=parquet``): windows of at most 28 days, every page followed
    through ``X-K2-Next-Cursor``.

    Raises:
        httpx.HTTPStatusError: the API refused the request.
    """
    pieces: list[pa.Table] = []
    query: dict[str, Any] = {**params, "format": "parquet"}
    if path.endswith(("/trades", "/quotes")):
        query["limit"] = page
    with httpx.Client(base_url=base_url, timeout=120) as client:
        for window in _windows(query):
            while True:
                response = client.get(path, params=window)
                response.raise_for_status()
                pieces.append(pq.read_table(io.BytesIO(response.content)))
                cursor = response.headers.get("X-K2-Next-Cursor")
                if not cursor:
                    break
                window["cursor"] = cursor
    return pa.concat_tables(pieces, promote_options="permissive")


@contextmanager
def serve_api(settings: Settings) -> Iterator[str]:
    """K2's API over a real socket (uvicorn in a thread, as ``k2 serve`` runs it); yields its URL.

    Raises:
        RuntimeError: uvicorn did not start within 20 s.
    """
    from k2.api import create_app

    port = free_port()
    config = uvicorn.Config(
        create_app(derive(settings, api={"port": port})), host="127.0.0.1", port=port,
        log_config=None, access_log=False,
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    if not server.started:
        raise RuntimeError("K2's API did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def ingest_asx(settings: Settings, root: Path = ASX_SAMPLE) -> int:
    """Produce the sample's trades to Kafka and ingest them with K2's pipeline; the rows produced.

    Uses ``settings``' broker, topics and lake as they are (the caller picks ``commit_rows`` so the
    ingest makes several snapshots).
    """
    from k2.feeds.asx import read_asx
    from k2.pipeline import Pipeline
    from k2.pipeline.sequencing import sequence_checks
    from k2.stream.admin import ensure_topics
    from k2.stream.producer import TickProducer

    trades = read_asx(root).delivery.frame("trades")
    ensure_topics(settings.kafka)
    producer = TickProducer(settings.kafka)
    producer.send("trades", trades)
    producer.close()
    Pipeline(settings, checks=sequence_checks(settings)).run(idle_timeout_s=3, max_seconds=300)
    return trades.height


def _earlier_snapshot(settings: Settings) -> int:
    """A snapshot of the trades table before its head (the middle of the history K2 keeps).

    Raises:
        ValueError: the table has fewer than two snapshots: there is nothing to travel back to.
    """
    table = open_catalog(settings).load_table(f"{settings.lake.namespace}.trades")
    snapshots = sorted(table.snapshots(), key=lambda s: s.sequence_number or 0)
    if len(snapshots) < 2:
        raise ValueError("the trades table has fewer than two snapshots: no history to travel to")
    return snapshots[(len(snapshots) - 1) // 2].snapshot_id


def _window(first: datetime, last: datetime) -> dict[str, str]:
    """[start, end) holding every bar of the trades from ``first`` to ``last`` (a bar starts at or
    before its first trade, never before that UTC day, whatever the exchange's zone)."""
    start = first.replace(hour=0, minute=0, second=0, microsecond=0)
    return {"start": start.isoformat(), "end": (last + timedelta(seconds=1)).isoformat()}


def _windows(params: dict[str, Any]) -> list[dict[str, Any]]:
    """``params`` split into windows of at most 28 days (the API caps a query at api.max_range_days)."""
    start, end = datetime.fromisoformat(params["start"]), datetime.fromisoformat(params["end"])
    out = []
    while start < end:
        stop = min(start + timedelta(days=28), end)
        out.append({**params, "start": start.isoformat(), "end": stop.isoformat()})
        start = stop
    return out


def run_checks(spark: Any, settings: Settings, base_url: str, *, interval: str = "1m") -> list[Verdict]:
    """The four comparisons of the module docstring, against K2's API at ``base_url``.

    Raises:
        ValueError: the lake has no trades or no earlier snapshot.
        httpx.HTTPStatusError: K2's API refused a request.
    """
    interval_us = parse_duration(interval, "interval", minimum_us=MIN_INTERVAL_US, maximum_us=MAX_INTERVAL_US)
    span = spark.sql(
        f"SELECT unix_micros(min(exchange_ts)), unix_micros(max(exchange_ts)), sort_array(collect_set(symbol)) "
        f"FROM {_relation(settings, 'trades', None)}"
    ).collect()[0]
    if span[0] is None:
        raise ValueError("the trades table is empty")
    symbols: list[str] = list(span[2])
    window = {"symbols": ",".join(symbols), **_window(_instant(span[0]), _instant(span[1]))}
    snapshot = _earlier_snapshot(settings)
    bar_key = ("exchange", "symbol", "start")
    verdicts = [
        compare(
            f"{interval} bars at the head ({len(symbols)} symbols)",
            k2_table(base_url, "/v1/bars", {**window, "interval": interval}),
            spark_bars(spark, settings, symbols, interval_us),
            bar_key,
        )
    ]
    k2_rows = k2_table(base_url, "/v1/trades", {**window, "snapshot_id": snapshot})
    spark_rows = spark_trades(spark, settings, snapshot)
    verdicts.append(compare(f"trades at snapshot {snapshot}", k2_rows, spark_rows, ("message_id",)))
    verdicts.append(
        compare(
            f"{interval} bars at snapshot {snapshot}",
            k2_table(base_url, "/v1/bars", {**window, "interval": interval, "snapshot_id": snapshot}),
            spark_bars(spark, settings, symbols, interval_us, snapshot),
            bar_key,
        )
    )
    head = spark.sql(f"SELECT count(*) FROM {_relation(settings, 'trades', None)}").collect()[0][0]
    history = Verdict(
        f"snapshot {snapshot} is history: {spark_rows.num_rows:,} rows there, {head:,} at the head",
        (), (), spark_rows.num_rows, spark_rows.num_rows,
    )  # fmt: skip
    if not spark_rows.num_rows < head:
        history.differing.append(((), "rows", spark_rows.num_rows, head))
    verdicts.append(history)
    return verdicts


def _check(settings: Settings, interval: str) -> bool:
    from k2.services.spark import spark_session

    started = time.perf_counter()
    spark = spark_session(settings)
    print(f"Spark {spark.version} session on catalog {settings.lake.catalog_name!r} "
          f"({time.perf_counter() - started:.1f} s)", flush=True)  # fmt: skip
    try:
        with serve_api(settings) as base_url:
            started = time.perf_counter()
            verdicts = run_checks(spark, settings, base_url, interval=interval)
    finally:
        spark.stop()
    for verdict in verdicts:
        print(verdict)
    passed = sum(v.ok for v in verdicts)
    print(f"{passed} passed, {len(verdicts) - passed} failed ({time.perf_counter() - started:.1f} s)")
    return passed == len(verdicts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.spark_check", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--data-dir", type=Path, help="an existing K2 data directory (default: ingest the ASX sample)"
    )
    parser.add_argument("--interval", default="1m", help="bar interval (default 1m)")
    parser.add_argument(
        "--conf", action="store_true", help="print the Spark configuration for K2's catalog and exit"
    )
    args = parser.parse_args(argv)
    if args.conf:
        from k2.services.jars import SparkJars
        from k2.services.spark import is_secret, spark_conf

        settings = load_settings(data_dir=args.data_dir or Path(".k2"))
        for key, value in spark_conf(settings, SparkJars(settings.cache_dir)).items():
            print(f"{key}={'**********' if is_secret(key) else value}")
        return 0
    if args.data_dir is not None:
        return 0 if _check(load_settings(data_dir=args.data_dir), args.interval) else 1
    from benchmarks.services import kafka_broker

    with kafka_broker(lake={"commit_rows": 50_000, "maintain_every_s": 0}) as settings:
        started = time.perf_counter()
        rows = ingest_asx(settings)
        print(f"ingested {rows:,} ASX trades through K2's pipeline ({time.perf_counter() - started:.1f} s)")
        return 0 if _check(settings, args.interval) else 1


if __name__ == "__main__":
    sys.exit(main())
