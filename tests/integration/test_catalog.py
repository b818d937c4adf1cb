"""The Iceberg catalog on SQLite and on PostgreSQL: the same commits, the same time travel, an exact
compare-and-set under concurrent writers.

The PostgreSQL server is Debian's, started through K2's launcher (``postgres`` in tests/conftest.py).
"""

from __future__ import annotations

import itertools
import multiprocessing
import queue
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.types import IntegerType, LongType, NestedField

from k2.config import Settings
from k2.lake import open_catalog
from k2.lake.offsets import OFFSETS_KEY, decode_offsets, table_offsets
from k2.lake.tables import COMMON_PROPERTIES
from k2.query.engine import QueryEngine
from k2.query.params import TimeRange, TimeTravel
from tests.conftest import CATALOGS
from tests.integration.test_pipeline import SYMBOLS, _ingest, _produce, make_trades

WINDOW = TimeRange(datetime(2024, 3, 10, 22, 0, tzinfo=UTC), datetime(2024, 3, 11, 1, 0, tzinfo=UTC))
BATCHES = pa.schema([("writer", pa.int32(), False), ("batch", pa.int32(), False), ("row", pa.int64(), False)])


def _snapshot_offsets(table: Table) -> list[dict[tuple[str, int], int]]:
    """The Kafka offsets of each snapshot, oldest first, walked from the head through its parents."""
    chain = []
    snapshot = table.current_snapshot()
    while snapshot is not None:
        summary = snapshot.summary
        chain.append(decode_offsets(summary[OFFSETS_KEY]) if summary and OFFSETS_KEY in summary else {})
        parent = snapshot.parent_snapshot_id
        snapshot = table.snapshot_by_id(parent) if parent is not None else None
    return chain[::-1]


@CATALOGS
def test_ingest_commits_offsets_and_time_travels(settings: Settings) -> None:
    """`k2 ingest` on either catalog: each snapshot covers more of the stream, the head all of it,
    and reading an earlier snapshot returns exactly the rows its offsets cover; a second run resumes
    from the offsets in the table."""
    trades = make_trades(3_500)
    _produce(settings, trades.head(3_000))
    small = {"K2_LAKE__COMMIT_ROWS": "400", "K2_PIPELINE__BATCH_MAX_MESSAGES": "400"}
    proc = _ingest(settings, "--idle-timeout", "3", K2_LAKE__MAINTAIN_EVERY_S="0", **small)
    out = proc.communicate(timeout=180)[0].decode()
    assert proc.returncode == 0, out[-3000:]

    catalog = open_catalog(settings)
    dialect = catalog.engine.dialect.name  # type: ignore[attr-defined]
    assert dialect == ("postgresql" if settings.catalog_uri.startswith("postgres") else "sqlite")
    table = catalog.load_table(f"{settings.lake.namespace}.trades")
    chain = [o for o in _snapshot_offsets(table) if o]
    assert len(chain) >= 3, chain
    for earlier, later in itertools.pairwise(chain):
        assert all(later[tp] >= offset for tp, offset in earlier.items()), (earlier, later)
    assert sum(chain[-1].values()) == 3_000  # the head reaches every partition's end

    engine = QueryEngine(catalog, settings.lake.namespace, refresh_interval_s=0)
    try:
        head = engine.ticks("trades", SYMBOLS, WINDOW, limit=10_000).table
        assert head.num_rows == 3_000
        snapshots = [s for s in table.snapshots() if s.summary and OFFSETS_KEY in s.summary]
        middle = snapshots[len(snapshots) // 2]
        covered = sum(decode_offsets(middle.summary[OFFSETS_KEY]).values())  # type: ignore[index]
        assert 0 < covered < 3_000
        past = engine.ticks(
            "trades", SYMBOLS, WINDOW, limit=10_000, travel=TimeTravel(snapshot_id=middle.snapshot_id)
        ).table
        assert past.num_rows == covered  # every offset below the snapshot's, once
        pairs = set(
            zip(
                past.column("kafka_partition").to_pylist(),
                past.column("kafka_offset").to_pylist(),
                strict=True,
            )
        )
        assert len(pairs) == covered
    finally:
        engine.close()

    _produce(settings, trades.slice(3_000))  # the stream goes on
    proc = _ingest(settings, "--idle-timeout", "3", K2_LAKE__MAINTAIN_EVERY_S="0", **small)
    out = proc.communicate(timeout=180)[0].decode()
    assert proc.returncode == 0, out[-3000:]
    assert "read 500" in out, out[-2000:]  # resumed from the table's offsets, nothing read twice
    table = table.refresh()
    assert sum(table_offsets(table).values()) == 3_500
    assert table.scan().to_arrow().num_rows == 3_500


def _batch_table(catalog: Catalog, namespace: str) -> Table:
    """A small table with K2's commit properties (pyiceberg's own commit retry off)."""
    catalog.create_namespace_if_not_exists(namespace)
    schema = Schema(
        NestedField(1, "writer", IntegerType(), required=True),
        NestedField(2, "batch", IntegerType(), required=True),
        NestedField(3, "row", LongType(), required=True),
    )
    return catalog.create_table(f"{namespace}.batches", schema, properties=COMMON_PROPERTIES)


def _rows(writer: int, batch: int, n: int) -> pa.Table:
    return pa.table(
        {"writer": [writer] * n, "batch": [batch] * n, "row": list(range(batch * n, batch * n + n))},
        schema=BATCHES,
    )


@CATALOGS
def test_the_catalog_refuses_a_commit_on_a_stale_head(settings: Settings) -> None:
    """Two writers (threads, each with its own catalog and connections) commit in lockstep from the
    same head: in every round exactly one lands and the other gets CommitFailedException, then retries
    on the new head. The snapshot chain holds every batch exactly once."""
    namespace = f"cas{uuid.uuid4().hex[:8]}"
    _batch_table(open_catalog(settings), namespace)
    rounds, n = 8, 5
    barrier = threading.Barrier(2, timeout=60)
    landed: list[list[int]] = [[], []]
    refused = [0, 0]
    errors: list[BaseException] = []

    def write(writer: int) -> None:
        try:
            table = open_catalog(settings).load_table(f"{namespace}.batches")
            batch = 0
            for _ in range(rounds):
                table = table.refresh()
                barrier.wait()  # both now hold the same head
                try:
                    table.append(_rows(writer, batch, n))
                    landed[writer].append(batch)
                    batch += 1
                except CommitFailedException:
                    refused[writer] += 1  # the batch stays pending; retried next round on the new head
                barrier.wait()
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=write, args=(w,)) for w in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert sum(refused) == rounds  # one refusal per round: the compare-and-set is exact
    assert len(landed[0]) + len(landed[1]) == rounds
    table = open_catalog(settings).load_table(f"{namespace}.batches")
    rows = table.scan().to_arrow()
    assert rows.num_rows == rounds * n
    seen = sorted(zip(rows.column("writer").to_pylist(), rows.column("batch").to_pylist(), strict=True))
    want = sorted((w, b) for w in (0, 1) for b in landed[w] for _ in range(n))
    assert seen == want  # no batch lost, none doubled
    assert len(table.snapshots()) == rounds


def _k2_writer(
    uri: str, identifier: str, partition: int, commits: int, rows: int, start_line: Any, results: Any
) -> None:
    """One writer process: K2's compare-and-set writer on its own Kafka partition.

    Puts (partition, commits made, conflicts retried, give-ups, seconds) on ``results``. Conflicts
    are the other writers' commits that moved the head between this writer's refresh and its
    commit. A give-up is the writer's LakeError after 20 conflicts in a row, on which the pipeline
    stops and a restart commits the same range again: so does this writer (nothing of it landed,
    or the retry would be fenced with StaleWriterError and fail the test).
    """
    from k2.config import load_settings
    from k2.lake.errors import LakeError, StaleWriterError
    from k2.lake.writer import NO_OFFSET, TableWriter
    from k2.observability.metrics import REGISTRY

    settings = load_settings(lake={"catalog_uri": uri})
    writer = TableWriter(open_catalog(settings), identifier)
    topic = "k2.batches"
    done = gave_up = 0
    start_line.wait()  # every process is imported and connected: the commits overlap from the first
    began = time.perf_counter()
    for i in range(commits):
        start = {(topic, partition): NO_OFFSET if i == 0 else i * rows}
        end = {(topic, partition): (i + 1) * rows}
        data = pa.table(
            {"writer": [partition] * rows, "batch": [i] * rows, "row": list(range(i * rows, (i + 1) * rows))},
            schema=BATCHES,
        )
        while True:
            try:
                writer.commit(data, start, end)
                break
            except StaleWriterError:
                raise
            except LakeError as exc:
                if "gave up" not in str(exc):
                    raise
                gave_up += 1
        done += 1
    seconds = time.perf_counter() - began
    conflicts = REGISTRY.get_sample_value("k2_lake_commit_conflicts_total", {"table": "batches"})
    results.put((partition, done, int(conflicts or 0), gave_up, seconds))


def _run_writers(settings: Settings, processes: int, commits: int, rows: int) -> tuple[Table, int, str]:
    """Run the writer processes at once; returns the table, the conflicts retried and a line of figures."""
    namespace = f"cc{uuid.uuid4().hex[:8]}"
    table = _batch_table(open_catalog(settings), namespace)
    ctx = multiprocessing.get_context("spawn")
    start_line, results = ctx.Barrier(processes, timeout=120), ctx.Queue()
    args = (settings.catalog_uri, f"{namespace}.batches")
    procs = [
        ctx.Process(target=_k2_writer, args=(*args, p, commits, rows, start_line, results))
        for p in range(processes)
    ]
    for proc in procs:
        proc.start()
    done: list[tuple[int, int, int, int, float]] = []
    try:
        deadline = time.monotonic() + 1500
        while len(done) < processes:  # a writer that dies fails the test now, not at the deadline
            try:
                done.append(results.get(timeout=1))
            except queue.Empty:
                failed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                assert not failed and time.monotonic() < deadline, f"writers failed (exit codes {failed})"
        for proc in procs:
            proc.join(60)
            assert proc.exitcode == 0
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
    assert sorted(d[:2] for d in done) == [(p, commits) for p in range(processes)]
    conflicts, gave_up = sum(d[2] for d in done), sum(d[3] for d in done)
    seconds = max(d[4] for d in done)
    figures = (
        f"{processes} writers x {commits} commits in {seconds:.1f}s ({processes * commits / seconds:.1f} "
        f"commits/s): {conflicts} conflicts retried, {gave_up} give-ups after 20 in a row"
    )
    return table.refresh(), conflicts, figures


def _assert_exact(table: Table, processes: int, commits: int, rows: int) -> None:
    data = table.scan().to_arrow()
    assert data.num_rows == processes * commits * rows
    keys = set(zip(data.column("writer").to_pylist(), data.column("row").to_pylist(), strict=True))
    assert keys == {(w, r) for w in range(processes) for r in range(commits * rows)}  # none lost, none twice
    assert table_offsets(table) == {("k2.batches", p): commits * rows for p in range(processes)}
    chain = _snapshot_offsets(table)
    assert len(chain) == processes * commits  # one snapshot per commit, every one on the chain
    for earlier, later in itertools.pairwise(chain):  # each commit moves one partition by one batch
        moved = {tp: later[tp] - earlier.get(tp, 0) for tp in later if later[tp] != earlier.get(tp, 0)}
        assert list(moved.values()) == [rows], moved


def test_concurrent_writer_processes_keep_every_row_once_on_postgres(postgres: Settings) -> None:
    """Two processes commit 25 times each to one table through the PostgreSQL catalog as fast as
    they can: they take turns on the table's commit lock, so none of their commits is refused
    (without it: 21 conflicts retried), and the table holds exactly the sum of rows."""
    processes, commits, rows = 2, 25, 20
    table, conflicts, figures = _run_writers(postgres, processes, commits, rows)
    _assert_exact(table, processes, commits, rows)
    print(figures)
    assert conflicts == 0


@pytest.mark.scale
@pytest.mark.timeout(1800)
def test_many_concurrent_writer_processes_on_postgres(postgres: Settings) -> None:
    """The same with 4 processes and 150 commits each (make scale-test). Before the commit lock
    they starved each other (about 500 s, 1,148 conflicts retried, 17 give-ups); now they queue."""
    processes, commits, rows = 4, 150, 50
    table, conflicts, figures = _run_writers(postgres, processes, commits, rows)
    print(figures)
    _assert_exact(table, processes, commits, rows)
    assert conflicts == 0


def _hold_lock(uri: str, identifier: str, held: Any) -> None:
    """A writer process that takes the table's commit lock and then hangs (until SIGKILLed)."""
    from k2.config import load_settings
    from k2.lake.commit_lock import commit_lock

    with commit_lock(open_catalog(load_settings(lake={"catalog_uri": uri})), identifier):
        held.set()
        time.sleep(600)


def test_a_commit_waits_for_the_lock_and_a_killed_holder_releases_it(postgres: Settings) -> None:
    """A writer stuck inside its commit holds the others off, with a clear error at the timeout;
    SIGKILLed, it releases the lock (PostgreSQL ends its session), and the next commit lands."""
    from k2.lake.commit_lock import commit_lock
    from k2.lake.errors import LakeError
    from k2.lake.writer import NO_OFFSET, TableWriter

    namespace = f"lk{uuid.uuid4().hex[:8]}"
    catalog = open_catalog(postgres)
    _batch_table(catalog, namespace)
    identifier = f"{namespace}.batches"
    ctx = multiprocessing.get_context("spawn")
    held = ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(postgres.catalog_uri, identifier, held))
    holder.start()
    try:
        assert held.wait(60)
        with (
            pytest.raises(LakeError, match="commit lock was not granted in 1s"),
            commit_lock(catalog, identifier, timeout_s=1.0),
        ):
            pass
        with commit_lock(catalog, f"{namespace}.other", timeout_s=1.0):
            pass  # one table's lock leaves the others alone
    finally:
        holder.kill()
        holder.join(30)
    writer = TableWriter(catalog, identifier)
    data = pa.table({"writer": [0], "batch": [0], "row": [0]}, schema=BATCHES)
    writer.commit(data, {("k2.batches", 0): NO_OFFSET}, {("k2.batches", 0): 1})  # granted again
    assert writer.table.scan().to_arrow().num_rows == 1


def _open_at_once(settings: Settings, start_line: threading.Barrier, outcomes: list[str]) -> None:
    start_line.wait()
    try:
        catalog = open_catalog(settings)
        outcomes.append("ok" if catalog.namespace_exists(settings.lake.namespace) else "no namespace")
    except Exception as exc:
        outcomes.append(repr(exc))


def test_writers_opening_a_new_postgres_catalog_at_once_all_get_it(postgres: Settings) -> None:
    """N ingesters starting together on an empty database race to create the catalog's tables and
    namespace; every one must open it (4 at once, on 5 new databases)."""
    from sqlalchemy import create_engine, text

    from k2.config import derive

    server = postgres.catalog_uri.rsplit("/", 1)[0]
    admin = create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    try:
        for _ in range(5):
            database = f"fresh{uuid.uuid4().hex[:8]}"
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{database}"'))
            settings = derive(postgres, lake={"catalog_uri": f"{server}/{database}"})
            start_line, outcomes = threading.Barrier(4, timeout=60), []
            threads = [
                threading.Thread(target=_open_at_once, args=(settings, start_line, outcomes))
                for _ in range(4)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert outcomes == ["ok"] * 4, outcomes
    finally:
        admin.dispose()
