"""Warm-up at start and prefetch on commit, through the real app, catalog, DuckDB and Parquet files.

No timing is asserted here (bench_cold measures speed): these tests check that warm-up happens
before /ready says ready, that a new snapshot is loaded before queries switch to it, and that
answers stay exact (a query right after the switch sees the committed rows; time travel still
reads the old snapshot); and that the live routes' hybrid engine (Kafka clients, tail cache) is
set up before ready, so the first /v1/trades/recent sets nothing up, while a Kafka outage does
not hold ready.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pyiceberg.table import Table

from k2.api import create_app
from k2.api.deps import Services
from k2.config import Settings
from k2.hybrid.cache import COLD_SETUPS
from k2.lake import ensure_tables, open_catalog
from k2.query.engine import QueryEngine
from k2.services.process import free_port
from k2.stream.admin import ensure_topics
from k2.stream.producer import TickProducer
from tests.unit.query.lakedata import append_commits, asx_frames, lineage

DAY = (date(2014, 3, 12),)
WINDOW = {"symbols": "BHP", "start": "2014-03-11T13:00:00Z", "end": "2014-03-12T13:00:00Z", "limit": 100_000}


@pytest.fixture
def lake(settings: Settings) -> dict[str, Table]:
    """One ASX day in the test's catalog, over two commits per table."""
    tables = ensure_tables(open_catalog(settings), settings.lake.namespace)
    frames = asx_frames(DAY)
    for kind in ("trades", "quotes"):
        append_commits(tables[kind], frames[kind].head(frames[kind].height // 2), 2)
    return tables


@pytest.fixture
def client(settings: Settings, lake: dict[str, Table]) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:  # the lifespan starts the warm-up
        yield test_client


def wait_ready(client: TestClient, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        response = client.get("/ready")
        if response.status_code == 200:
            body: dict[str, Any] = response.json()
            return body
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == "1"
        assert time.monotonic() < deadline, f"not ready: {response.json()}"
        time.sleep(0.1)


def services(client: TestClient) -> Services:
    svc = client.app.state.k2  # type: ignore[attr-defined]
    assert isinstance(svc, Services)
    return svc


def head(table: Table | None) -> int | None:
    snap = table.current_snapshot() if table is not None else None
    return snap.snapshot_id if snap is not None else None


def test_warm_up_loads_file_lists_and_newest_rows_before_ready(
    client: TestClient, lake: dict[str, Table]
) -> None:
    body = wait_ready(client)
    engine = services(client).engine()
    assert body["status"] == "ready" and body["ready_after_s"] > 0
    for kind in ("trades", "quotes"):
        table = lake[kind].refresh()
        files = engine.reader.fileset(kind, table, table.current_snapshot())
        warmed = body["tables"][kind]
        assert warmed["snapshot_id"] == head(table)
        assert warmed["files"] == len(files) == len(table.inspect.files())
        # one ASX half-day fits the warm budget: every file is decoded in the hot-row cache
        assert warmed["rows_loaded"] == files.rows == table.scan().to_arrow().num_rows
        assert all(engine.reader.rows.get(path) is not None for path in files.paths.tolist())
    assert body["tables"]["trades"]["partitions_warmed"] >= 1
    # the answer is the one a cold engine gives
    answer = client.get("/v1/trades", params=WINDOW).json()
    cold = QueryEngine(engine.catalog, engine.reader.namespace, refresh_interval_s=0, row_cache_rows=0)
    try:
        expected = cold.ticks("trades", ("BHP",), cold.window(WINDOW["start"], WINDOW["end"]), limit=100_000)
    finally:
        cold.close()
    assert answer["count"] == expected.table.num_rows > 0


def test_a_new_snapshot_is_loaded_before_queries_switch_to_it(
    client: TestClient, lake: dict[str, Table]
) -> None:
    wait_ready(client)
    engine = services(client).engine()
    reader = engine.reader
    prepare = reader.prepare
    assert prepare is not None
    observed: list[tuple[int | None, int | None, bool]] = []

    def observe(name: str, table: Table) -> None:  # the real hook, and what queries saw meanwhile
        prepare(name, table)
        if name == "trades":
            files = reader.fileset(name, table, table.current_snapshot())
            loaded = all(reader.rows.get(p) is not None for p in files.paths.tolist())
            observed.append((head(table), head(reader.source(name).published), loaded))

    reader.set_prepare(observe)
    before = client.get("/v1/trades", params=WINDOW)
    old_snapshot, old_count = before.headers["X-K2-Snapshots"], before.json()["count"]

    trades = lake["trades"].refresh()
    frame = asx_frames(DAY)["trades"]
    rest = frame.slice(frame.height // 2)
    trades.append(lineage(rest, trades, frame.height // 2))
    new_id = head(trades)

    deadline = time.monotonic() + 60
    while True:  # the watcher picks the commit up within a second or so, with no query needed
        response = client.get("/v1/trades", params=WINDOW)
        if response.headers["X-K2-Snapshots"] == f"trades={new_id}":
            break
        assert response.headers["X-K2-Snapshots"] == old_snapshot
        assert response.json()["count"] == old_count  # never a half-switched answer
        assert time.monotonic() < deadline, "the new snapshot was not published"
        time.sleep(0.05)

    # prefetch ran on the new snapshot while queries still read the old one, and loaded its rows
    assert (new_id, int(old_snapshot.split("=")[1]), True) in observed
    # the first answer on the new snapshot holds the committed rows
    bhp = rest.filter(rest["symbol"] == "BHP").height
    assert bhp > 0 and response.json()["count"] == old_count + bhp
    # time travel still reads the snapshot it names
    travelled = client.get("/v1/trades", params={**WINDOW, "snapshot_id": old_snapshot.split("=")[1]})
    assert travelled.json()["count"] == old_count
    assert services(client).warmer is not None
    ready = client.get("/ready").json()
    assert ready["tables"]["trades"]["snapshot_id"] == new_id and ready["tables"]["trades"]["prepared"] >= 2


def cold_setups() -> dict[str, float]:
    return {what: COLD_SETUPS.labels(what)._value.get() for what in ("clients", "partition")}


def test_warm_up_sets_up_the_live_routes_before_ready(settings: Settings, lake: dict[str, Table]) -> None:
    """The Kafka clients and the tail are loaded before ready: the first live query sets up nothing."""
    ensure_topics(settings.kafka)
    frame = asx_frames(DAY)["trades"]
    tail = frame.slice(frame.height // 2, 3_000)  # not committed: only Kafka holds these trades
    producer = TickProducer(settings.kafka)
    try:
        producer.send("trades", tail)
        producer.flush()
    finally:
        producer.close()
    before = cold_setups()
    with TestClient(create_app(settings)) as client:
        live = wait_ready(client)["hybrid"]
        assert live["status"] == "ready", live
        # every partition of both topics and their spill topics is short enough to be read
        assert live["partitions"] == live["topic_partitions"] > 0
        assert live["tail_rows"] == tail.height
        warmed = cold_setups()
        assert warmed["clients"] == before["clients"] + 1
        assert warmed["partition"] == before["partition"] + live["partitions"]

        bhp = tail.filter(tail["symbol"] == "BHP")
        body = client.get("/v1/trades/recent", params={"symbol": "BHP", "minutes": 1440}).json()
        assert bhp.height > 0 and body["tail_rows"] == bhp.height
        assert {r["message_id"] for r in body["data"] if not r["committed"]} == set(bhp["message_id"])
        bars = client.get("/v1/bars/live", params={"symbol": "BHP", "minutes": 60, "interval": "1m"})
        assert bars.status_code == 200
        assert cold_setups() == warmed  # no client built, no partition positioned by a query


def test_a_kafka_outage_does_not_hold_ready(settings: Settings, lake: dict[str, Table]) -> None:
    """History is served without Kafka: /ready says the hybrid warm-up failed, and answers 200."""
    down = settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{free_port()}"})}
    )
    with TestClient(create_app(down)) as client:
        body = wait_ready(client)
        assert body["hybrid"]["status"] == "failed" and "error" in body["hybrid"], body["hybrid"]
        assert client.get("/v1/trades", params=WINDOW).json()["count"] > 0
        assert client.get("/v1/trades/recent", params={"symbol": "BHP", "minutes": 60}).status_code == 503
