"""One deployment past one machine (issue #16, "done when"): a 3-node Kafka cluster, the catalog on
PostgreSQL, the warehouse on S3, Redis for sequence state, two ingesters in one group, and Spark
reading what they wrote.

Everything is run as a user would run it, through the ``k2`` CLI: ``k2 services up`` starts the
cluster (replication 3, ``min.insync.replicas`` 2, acks=all), PostgreSQL, SeaweedFS and Redis;
``k2 feed asx`` replays the real ASX sample while two ``k2 ingest`` processes share its
partitions (the second joins mid-feed: a rebalance) and, beside them, one ``k2 ingest`` of another
group writes the same stream into another namespace; a broker that is not the active controller is
SIGKILLed mid-feed and restarted. Then the checks print:

- the tables of the two ingesters equal the one ingester's, row for row (trades, quotes, gaps);
- every trade of the sample is there once;
- Spark, through Iceberg's JDBC catalog on PostgreSQL and S3FileIO on SeaweedFS, equals ``k2 serve``
  on 1-minute bars and on time travel to a snapshot id.

Marked ``scale``: about 5 JVMs and a Spark driver are too much for ``make test`` on 2 cores.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
from confluent_kafka.admin import AdminClient

from benchmarks.services import wait_served
from benchmarks.spark_check import Verdict, compare, run_checks
from k2.config import Settings, load_settings
from k2.lake import open_catalog
from k2.services.process import free_port, free_port_block

pytestmark = pytest.mark.scale

BUCKET = "k2-deploy"
TRADES = 200_545  # every trade of the ASX sample
#: Columns that say when a row was written, not what it holds: they differ between two ingests.
WRITE_TIME = ("k2_commit_ms", "detected_at")
KEYS = {"trades": ("message_id",), "quotes": ("message_id",), "sequence_gaps": None}


@dataclass(frozen=True)
class Deployment:
    settings: Settings  # the services; lake.namespace is the two ingesters'
    one: str  # the namespace the single ingester wrote
    env: dict[str, str]
    logs: Path
    notes: list[str]
    api: str  # `k2 serve` over the two ingesters' namespace, up from before the feed
    answers: list[Answer]  # the hybrid endpoint asked about each day through the feed and the kills
    final: list[Answer]  # the same questions once everything is committed
    kills: list[float]  # when each broker was SIGKILLed, in the watch's seconds
    b_assigned: bool  # ingester b was given partitions when it joined


@dataclass(frozen=True)
class Answer:
    day: str  # the trading day asked about
    at: float  # seconds since the watch started
    status: int  # 0: no HTTP answer within the client's timeout
    count: int | None = None
    tail_rows: int | None = None
    truncated: bool | None = None
    detail: str = ""


#: The sample's trading days (ASX, UTC+11): RIO's trades of a day are the 24 h to 12:00 UTC, answered
#: from Iceberg and the Kafka tail. The feed runs through them in order, so whichever day is being
#: fed when a broker dies is asked about while it fills.
DAYS = ("2014-03-10", "2014-03-11", "2014-03-12", "2014-03-13", "2014-03-14")


def _recent(day: str) -> dict[str, str | int]:
    return {"symbol": "RIO", "minutes": 1440, "until": f"{day}T12:00:00Z"}


class TailWatch(threading.Thread):
    """A client asking ``/v1/trades/recent`` about each day in turn, each twice a second, as a
    dashboard would."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.answers: list[Answer] = []
        self.began = time.monotonic()
        self._halt = threading.Event()

    def at(self) -> float:
        return time.monotonic() - self.began

    def ask(self, day: str) -> Answer:
        at = self.at()
        try:
            r = httpx.get(f"{self.url}/v1/trades/recent", params=_recent(day), timeout=15)
        except httpx.TransportError as exc:
            return Answer(day, at, 0, detail=repr(exc))
        if r.status_code != 200:
            return Answer(day, at, r.status_code, detail=r.text[:300])
        body = r.json()
        reason = body.get("truncated_reason") or ""
        return Answer(day, at, 200, body["count"], body["tail_rows"], body["truncated"], detail=reason)

    def run(self) -> None:
        turn = 0
        while not self._halt.wait(0.5 / len(DAYS)):
            self.answers.append(self.ask(DAYS[turn % len(DAYS)]))
            turn += 1

    def stop(self) -> None:
        self._halt.set()
        self.join(30)


def _k2(*args: str) -> list[str]:
    return [sys.executable, "-m", "k2.cli", *args]


def _run(env: dict[str, str], *args: str, timeout_s: float = 300.0) -> str:
    done = subprocess.run(_k2(*args), env=env, capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 0, f"k2 {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _spawn(env: dict[str, str], log: Path, *args: str, **extra: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(_k2(*args), env={**env, **extra}, stdout=out, stderr=subprocess.STDOUT)


def _kafka_nodes(env: dict[str, str]) -> tuple[dict[int, int | None], int | None]:
    (status,) = json.loads(_run(env, "services", "status", "kafka", "--json", timeout_s=60))
    return {int(n): pid for n, pid in status.get("nodes", {}).items()}, status.get("controller")


def _committed(settings: Settings, namespace: str) -> int:
    try:
        table = open_catalog(settings).load_table(f"{namespace}.trades")
    except Exception:  # not created yet
        return 0
    snapshot = table.current_snapshot()
    return int(snapshot.summary.get("total-records", 0)) if snapshot and snapshot.summary else 0


def _wait(procs: list[subprocess.Popen[bytes]], logs: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        try:
            code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"an ingester did not finish in {timeout_s:.0f}s (logs in {logs})") from None
        assert code == 0, f"an ingester exited {code} (logs in {logs})"


def _leader(settings: Settings, kind: str, partition: int) -> int | None:
    """The node leading a partition of a tick topic, from the cluster's metadata."""
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap})
    topic = admin.list_topics(settings.kafka.topic(kind), timeout=10).topics[settings.kafka.topic(kind)]
    part = topic.partitions.get(partition)
    return part.leader if part is not None and part.leader >= 0 else None


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _ports() -> tuple[int, int, int, int]:
    """Kafka's block (3 nodes: port + 2i, controller + 2i), SeaweedFS's block, Redis, PostgreSQL:
    free and not overlapping (nothing is bound until the services start)."""
    taken: set[int] = set()

    def block(count: int) -> int:
        while True:
            base = free_port_block(count) if count > 1 else free_port()
            span = set(range(base, base + count))
            if not span & taken:
                taken.update(span)
                return base

    return block(6), block(8), block(1), block(1)


@pytest.fixture(scope="module")
def deployment(asx_data: Path) -> Iterator[Deployment]:
    # PostgreSQL runs as the postgres user under root: the data directory must be traversable.
    home = Path(tempfile.mkdtemp(prefix="k2-deploy-"))
    home.chmod(0o711)
    kafka_base, s3_port, redis_port, pg_port = _ports()
    tag = uuid.uuid4().hex[:6]
    env = {k: v for k, v in os.environ.items() if not k.startswith("K2_")}
    env.update(
        K2_DATA_DIR=str(home / "k2"),
        K2_KAFKA__BROKERS="3",
        K2_KAFKA__PORT=str(kafka_base),
        K2_KAFKA__CONTROLLER_PORT=str(kafka_base + 1),
        K2_KAFKA__HEAP="512m",
        K2_KAFKA__PARTITIONS="4",
        K2_REDIS__PORT=str(redis_port),
        K2_POSTGRES__PORT=str(pg_port),
        K2_S3__PORT=str(s3_port),
        K2_LAKE__CATALOG="postgres",
        K2_LAKE__WAREHOUSE=f"s3://{BUCKET}/warehouse",
        K2_STATE__BACKEND="redis",
    )
    settings = load_settings(
        data_dir=home / "k2",
        kafka={
            "brokers": 3,
            "port": kafka_base,
            "controller_port": kafka_base + 1,
            "heap": "512m",
            "partitions": 4,
        },
        redis={"port": redis_port},
        postgres={"port": pg_port},
        s3={"port": s3_port},
        lake={"catalog": "postgres", "warehouse": f"s3://{BUCKET}/warehouse", "namespace": f"two_{tag}"},
        state={"backend": "redis"},
    )
    # kept after the run, outside pytest's rotating temporary directories
    logs = Path(tempfile.mkdtemp(prefix="k2-deploy-logs-"))
    print(f"logs in {logs}")
    notes: list[str] = []
    procs: list[subprocess.Popen[bytes]] = []
    serve: subprocess.Popen[bytes] | None = None
    watch: TailWatch | None = None
    try:
        _run(env, "services", "up", "kafka", "redis", "postgres", "s3", timeout_s=900)
        nodes, controller = _kafka_nodes(env)
        assert len(nodes) == 3 and all(nodes.values()) and controller in nodes, (nodes, controller)
        port = free_port()
        serve = _spawn(
            env,
            logs / "serve.log",
            "serve",
            K2_LAKE__NAMESPACE=f"two_{tag}",
            K2_API__PORT=str(port),
            K2_API__RATE_LIMIT_PER_MINUTE="100000",  # the watch asks ten times a second
        )
        api = f"http://127.0.0.1:{port}"
        wait_served(api, serve, logs / "serve.log", path="/health", timeout_s=90)

        two = {"K2_LAKE__NAMESPACE": f"two_{tag}", "K2_PIPELINE__GROUP_ID": f"two-{tag}",
               "K2_REDIS__KEY_PREFIX": f"two{tag}:"}  # fmt: skip
        one = {"K2_LAKE__NAMESPACE": f"one_{tag}", "K2_PIPELINE__GROUP_ID": f"one-{tag}",
               "K2_REDIS__KEY_PREFIX": f"one{tag}:"}  # fmt: skip
        ingest = ("ingest", "--idle-timeout", "25")
        small = {"K2_LAKE__COMMIT_ROWS": "40000"}  # several snapshots to travel between
        procs.append(_spawn(env, logs / "two-a.log", *ingest, **two, **small, K2_PIPELINE__INSTANCE_ID="a"))
        procs.append(_spawn(env, logs / "one.log", *ingest, **one, **small, K2_PIPELINE__INSTANCE_ID="solo"))
        time.sleep(5)  # both groups have joined before the feed starts
        # paced (about 3 minutes: 1,500 x exchange time, nights cut to 0.2 s), so both SIGKILLs and
        # both restarts land while the feed produces
        feed = _spawn(
            env, logs / "feed.log", "feed", "asx", str(asx_data), "--speed", "1500", "--max-idle", "0.2"
        )

        # The second ingester joins once the first has committed: a rebalance mid-stream.
        deadline = time.monotonic() + 300
        while _committed(settings, f"two_{tag}") == 0:
            assert time.monotonic() < deadline and feed.poll() in (None, 0), (
                f"nothing committed (logs in {logs})"
            )
            time.sleep(0.5)
        procs.append(_spawn(env, logs / "two-b.log", *ingest, **two, **small, K2_PIPELINE__INSTANCE_ID="b"))
        watch = TailWatch(api)
        watch.start()
        notes.append(
            f"ingester b joined group two-{tag} at {_committed(settings, f'two_{tag}'):,} trades committed"
        )

        # The leader of the busiest partition dies mid-feed and comes back, then the active controller.
        kills: list[float] = []
        for role in ("leader of k2.trades[1]", "active controller"):
            nodes, controller = _kafka_nodes(env)
            victim = _leader(settings, "trades", 1) if role.startswith("leader") else controller
            assert victim is not None and nodes.get(victim), (role, victim, nodes)
            assert feed.poll() is None, f"the feed ended before the {role} was killed: pace it slower"
            os.kill(nodes[victim], signal.SIGKILL)  # type: ignore[arg-type]
            kills.append(watch.at())
            committed = _committed(settings, f"two_{tag}")
            notes.append(
                f"{role}: node {victim} SIGKILLed at {committed:,} trades committed, restarted 3 s later"
            )
            time.sleep(3)
            _run(env, "services", "up", "kafka", timeout_s=300)
            assert all(_kafka_nodes(env)[0].values()), "the killed broker did not come back"

        assert feed.wait(timeout=600) == 0, f"k2 feed asx failed (logs in {logs})"
        _wait(procs, logs, timeout_s=900)
        watch.stop()
        final = [watch.ask(day) for day in DAYS]
        b_assigned = '"partitions": {"' in (logs / "two-b.log").read_text(errors="replace")
        yield Deployment(
            settings, f"one_{tag}", env, logs, notes, api, watch.answers, final, kills, b_assigned
        )
    finally:  # every step, whatever the one before it raised: no JVM or server may outlive the test
        with contextlib.ExitStack() as cleanup:
            cleanup.callback(shutil.rmtree, home, ignore_errors=True)
            cleanup.callback(
                subprocess.run, _k2("services", "down"), env=env, capture_output=True, timeout=300
            )
            for proc in procs:
                cleanup.callback(lambda p=proc: p.poll() is None and p.kill())
            if serve is not None:
                cleanup.callback(_stop, serve)
            if watch is not None:
                cleanup.callback(watch.stop)


def _table(settings: Settings, namespace: str, name: str) -> pa.Table:
    table = open_catalog(settings).load_table(f"{namespace}.{name}").scan().to_arrow()
    return table.drop_columns([c for c in WRITE_TIME if c in table.column_names])


def _gap_key(table: pa.Table) -> pa.Table:
    """The gap table has no message id: a row is keyed by everything it says."""
    return table.append_column(
        "key", pa.array([json.dumps(r, default=str, sort_keys=True) for r in table.to_pylist()])
    )


def test_two_ingesters_on_the_cluster_write_what_one_writes(deployment: Deployment) -> None:
    for note in deployment.notes:
        print(note)
    assert deployment.b_assigned, f"ingester b never owned a partition ({deployment.logs})"
    verdicts: list[Verdict] = []
    settings = deployment.settings
    for name, key in KEYS.items():
        two = _table(settings, settings.lake.namespace, name)
        one = _table(settings, deployment.one, name)
        if key is None:
            two, one, key = _gap_key(two), _gap_key(one), ("key",)
        verdicts.append(
            compare(f"{name}: 2 ingesters == 1", two, one, key, sides=("2 ingesters", "1 ingester"))
        )
    for verdict in verdicts:
        print(verdict)
    assert [v.ok for v in verdicts] == [True] * len(verdicts), "\n".join(map(str, verdicts))
    trades = _table(settings, settings.lake.namespace, "trades").column("message_id")
    assert len(trades) == TRADES == len(set(trades.to_pylist()))  # every trade of the sample, once
    location = open_catalog(settings).load_table(f"{settings.lake.namespace}.trades").location()
    assert location.startswith(f"s3://{BUCKET}/"), location
    assert not (settings.data_dir / "warehouse").exists()  # nothing went to local disk


def test_the_hybrid_tail_rides_through_the_elections(deployment: Deployment) -> None:
    """Asked about each trading day through the feed, the rebalance and both SIGKILLs, the hybrid
    endpoint never loses a row it has shown (each answer is exact up to the offsets it reports, and
    those only grow), never hangs, answers from the tail while the elections run, and ends equal to
    the lake."""
    answers, kills = deployment.answers, deployment.kills
    statuses = Counter(a.status for a in answers)
    ok = [a for a in answers if a.status == 200]
    print(f"{len(answers)} answers over {answers[-1].at:.0f} s: statuses {dict(statuses)}; kills at {kills}")
    for a in answers:
        if a.status != 200:
            print(f"  at {a.at:.1f} s: {a.status} {a.detail}")
    refused = [a for a in answers if a.status != 200]
    # 503 is the API saying Kafka did not answer in time (with its reason); nothing else may happen
    assert all(a.status == 503 for a in refused), refused[:5]
    assert len(ok) >= 0.8 * len(answers), statuses
    # A prefix is only allowed as the API announces it: Kafka slower than hybrid.read_timeout_s (2 s)
    # on a loaded machine (the answer says so and is exact up to its offsets), in few answers. A
    # tail cut by the cache bounds or by retention would be a fault here.
    truncated = [a for a in ok if a.truncated]
    for a in truncated:
        print(f"  at {a.at:.1f} s: a prefix ({a.detail})")
    assert all(a.detail.startswith("read_timeout") for a in truncated), truncated[:5]
    assert len(truncated) <= 0.1 * len(ok), [a.detail for a in truncated]
    for day in DAYS:
        counts = [a.count or 0 for a in ok if a.day == day]
        assert counts == sorted(counts), (day, counts)  # no row a client saw ever disappeared
    for kill in kills:  # while the elections ran, the live edge was served, from the tail
        around = [a for a in ok if kill <= a.at <= kill + 60 and a.count and a.tail_rows]
        print(f"  kill at {kill:.1f} s: {len(around)} answers with tail rows in the next 60 s")
        assert around, f"no answer from the tail within 60 s of the kill at {kill:.1f} s"
    table = open_catalog(deployment.settings).load_table(f"{deployment.settings.lake.namespace}.trades")
    for day, final in zip(DAYS, deployment.final, strict=True):
        start = (datetime.fromisoformat(day) - timedelta(hours=12)).isoformat()
        window = f"symbol = 'RIO' and exchange_ts >= '{start}+00:00' and exchange_ts < '{day}T12:00:00+00:00'"
        lake = table.scan(row_filter=window, selected_fields=("message_id",)).to_arrow().num_rows
        print(f"  {day}: {final.count} rows answered, {lake} in the lake")
        assert final.status == 200 and final.count == lake > 10_000, final


def test_spark_reads_the_deployment_as_k2_serves_it(deployment: Deployment) -> None:
    from k2.services.spark import spark_session

    settings = deployment.settings
    session: Any = spark_session(settings, driver_memory="1g")
    try:
        verdicts = run_checks(session, settings, deployment.api, interval="1m")
    finally:
        session.stop()
    for verdict in verdicts:
        print(verdict)
    assert [v.ok for v in verdicts] == [True] * len(verdicts), "\n".join(map(str, verdicts))
