"""As of T stays exact after the snapshot of T is expired, through compaction, on every query kind."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.schema import Schema
from pyiceberg.table import Table

from k2.lake import maintenance as mx
from k2.lake.stamp import STAMP_COLUMN, STAMPED_SINCE_KEY, without_stamp
from k2.lake.tables import _specs, ensure_tables
from k2.lake.writer import NO_OFFSET, TableWriter
from k2.query.engine import QueryEngine
from k2.query.errors import SnapshotNotFoundError
from k2.query.params import TimeRange, TimeTravel
from k2.query.stats import SessionRange
from tests.unit.query.lakedata import asx_frames, lineage

DAY = (date(2014, 3, 12),)
SYMBOLS = ("BHP", "RIO", "DVN", "MWR")
WINDOW = TimeRange(datetime(2014, 3, 11, 13, 0, tzinfo=UTC), datetime(2014, 3, 12, 13, 0, tzinfo=UTC))
SESSIONS = SessionRange(date(2014, 3, 12), date(2014, 3, 12), max_days=31)
COMMITS = 5


def _catalog(root: Path) -> SqlCatalog:
    catalog = SqlCatalog("t", uri=f"sqlite:///{root}/catalog.db", warehouse=f"file://{root}/warehouse")
    catalog.create_namespace("k2")
    return catalog


def _commit(writer: TableWriter, kind: str, part: pl.DataFrame, offset: int) -> None:
    table = writer.table.refresh()
    arrow = lineage(part, table, offset)
    topic = (f"k2.{kind}", 0)
    writer.commit(arrow, {topic: offset or NO_OFFSET}, {topic: offset + part.height})


def _answers(engine: QueryEngine, at: datetime) -> dict[str, Any]:
    """Every query kind as of ``at``, as plain rows."""
    travel = TimeTravel(as_of=at)
    replayed = engine.replay(("trades", "quotes"), SYMBOLS, WINDOW, travel=travel)
    return {
        "trades": engine.ticks("trades", SYMBOLS, WINDOW, limit=100_000, travel=travel).table.to_pylist(),
        "quotes": engine.ticks("quotes", SYMBOLS, WINDOW, limit=100_000, travel=travel).table.to_pylist(),
        # vwap is a float: its sums depend on how rows fall into files (compaction), not on T
        "bars": [
            {**b, "vwap": round(b["vwap"], 9)}
            for b in engine.bars(SYMBOLS, WINDOW, 300_000_000, travel=travel).table.to_pylist()
        ],
        "latest": engine.latest(SYMBOLS, travel=travel).table.to_pylist(),
        "days": engine.symbols(SYMBOLS, SESSIONS, travel=travel).table.to_pylist(),
        "joins": engine.trades_with_quotes(SYMBOLS, WINDOW, 5_000_000, travel=travel).table.to_pylist(),
        "replay": [row for b in replayed.batches for row in b.to_pylist()],
    }


def _feed(
    catalog: SqlCatalog, offset: dict[str, int], parts: dict[str, list[pl.DataFrame]], n: int
) -> list[datetime]:
    """``n`` more commits per table; returns a time just after each round of commits."""
    writers = {kind: TableWriter(catalog, f"k2.{kind}") for kind in ("trades", "quotes")}
    marks = []
    for _ in range(n):
        for kind, writer in writers.items():
            part = parts[kind].pop(0)
            _commit(writer, kind, part, offset[kind])
            offset[kind] += part.height
        time.sleep(0.005)
        marks.append(datetime.now(UTC))
        time.sleep(0.005)
    return marks


def _slices(frames: dict[str, pl.DataFrame], n: int) -> dict[str, list[pl.DataFrame]]:
    out = {}
    for kind, frame in frames.items():
        size = -(-frame.height // n)
        out[kind] = [frame.slice(i * size, size) for i in range(n)]
    return out


def test_as_of_is_the_same_after_expiry_and_compaction(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path)
    tables = ensure_tables(catalog, "k2")
    parts = _slices({k: v for k, v in asx_frames(DAY).items() if k in ("trades", "quotes")}, COMMITS)
    offset = {"trades": 0, "quotes": 0}
    before_first = datetime.now(UTC)
    marks = _feed(catalog, offset, parts, COMMITS)
    engine = QueryEngine(catalog, "k2", refresh_interval_s=0)
    wanted = {at: _answers(engine, at) for at in (before_first, *marks)}
    assert len({len(w["trades"]) for w in wanted.values()}) == COMMITS + 1  # each commit shows

    for kind in ("trades", "quotes"):
        table = tables[kind].refresh()
        mx.compact(table)  # files of many commits merged: the cut is by row, not by file
        mx.expire_snapshots(table.refresh(), older_than=timedelta(0), keep_last=1)
        assert len(table.refresh().snapshots()) == 1
    fresh = QueryEngine(catalog, "k2", refresh_interval_s=0)  # nothing cached from before
    for at, want in wanted.items():
        got = _answers(fresh, at)
        for key in want:
            assert got[key] == want[key], (at, key)
        again = _answers(engine, at)  # and through the warm caches of the first engine
        assert again == want
    head = fresh.ticks("trades", SYMBOLS, WINDOW, limit=100_000).table.num_rows
    assert head == len(wanted[marks[-1]]["trades"])


def test_a_cut_answer_reports_t_and_pages_with_it(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path)
    tables = ensure_tables(catalog, "k2")
    parts = _slices({k: v for k, v in asx_frames(DAY).items() if k in ("trades", "quotes")}, 4)
    marks = _feed(catalog, {"trades": 0, "quotes": 0}, parts, 4)
    engine = QueryEngine(catalog, "k2", refresh_interval_s=0)
    at = marks[1]
    want = engine.ticks("trades", SYMBOLS, WINDOW, limit=100_000, travel=TimeTravel(as_of=at)).table
    mx.expire_snapshots(tables["trades"].refresh(), older_than=timedelta(0), keep_last=1)
    fresh = QueryEngine(catalog, "k2", refresh_interval_s=0)
    pages, cursor = [], None
    while True:
        page = fresh.ticks("trades", SYMBOLS, WINDOW, limit=500, cursor=cursor, travel=TimeTravel(as_of=at))
        pages.append(page.table)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pa.concat_tables(pages).to_pylist() == want.to_pylist()
    listed = fresh.snapshots("trades").table.to_pylist()
    assert len(listed) == 1


def _legacy_table(catalog: SqlCatalog, kind: str) -> Table:
    """The table as an older K2 created it: no commit-stamp column."""
    spec = _specs()[kind]
    old = Schema(*[f for f in spec.schema.fields if f.name != STAMP_COLUMN])
    return catalog.create_table(
        f"k2.{kind}", old, partition_spec=spec.partition_spec, sort_order=spec.sort_order
    )


def test_past_the_guarantee_is_a_404_not_a_nearby_answer(tmp_path: Path) -> None:
    """Commits of an older K2 (no stamps), expired: as of a time among them has no exact answer."""
    catalog = _catalog(tmp_path)
    legacy = _legacy_table(catalog, "trades")
    trades = asx_frames(DAY)["trades"]
    quarter = trades.height // 4
    legacy.append(lineage(trades.head(quarter), legacy))
    legacy.append(lineage(trades.slice(quarter, quarter), legacy, quarter))
    time.sleep(0.01)
    among_legacy = datetime.now(UTC)
    legacy.append(lineage(trades.slice(2 * quarter, quarter), legacy, 2 * quarter))
    time.sleep(0.01)
    tables = ensure_tables(catalog, "k2")  # the upgrade: the column is added, stamps begin
    table = tables["trades"]
    assert STAMP_COLUMN in table.schema().column_names
    since = int(table.properties[STAMPED_SINCE_KEY])
    writer = TableWriter(catalog, "k2.trades")
    writer.commit(
        lineage(trades.slice(3 * quarter, quarter), table, 3 * quarter),
        {("k2.trades", 0): NO_OFFSET}, {("k2.trades", 0): 4 * quarter},
    )  # fmt: skip
    time.sleep(0.01)
    after_upgrade = datetime.now(UTC)
    writer.commit(
        lineage(trades.slice(4 * quarter), table, 4 * quarter),
        {("k2.trades", 0): 4 * quarter}, {("k2.trades", 0): trades.height},
    )  # fmt: skip
    engine = QueryEngine(catalog, "k2", refresh_interval_s=0)

    def count(at: datetime) -> int:
        return engine.ticks(
            "trades", SYMBOLS, WINDOW, limit=100_000, travel=TimeTravel(as_of=at)
        ).table.num_rows

    assert count(among_legacy) == 2 * quarter
    assert count(after_upgrade) == 4 * quarter
    mx.compact(table.refresh())  # old files (no column) and stamped ones merged
    mx.expire_snapshots(table.refresh(), older_than=timedelta(0), keep_last=1)
    engine = QueryEngine(catalog, "k2", refresh_interval_s=0)
    assert count(after_upgrade) == 4 * quarter  # stamped: still exact
    assert count(datetime.fromtimestamp(since / 1000, UTC)) == 3 * quarter  # the legacy rows, all of them
    with pytest.raises(SnapshotNotFoundError, match="keeps no exact state") as info:
        count(among_legacy)
    assert info.value.status_code == 404
    rows = table.refresh().scan().to_arrow()
    assert rows.num_rows == trades.height
    assert rows.column(STAMP_COLUMN).null_count == 3 * quarter


def test_the_writer_times_the_snapshot_with_the_rows_stamp(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path)
    tables = ensure_tables(catalog, "k2")
    parts = _slices({"trades": asx_frames(DAY)["trades"]}, 3)["trades"]
    writer = TableWriter(catalog, "k2.trades")
    offset = 0
    for part in parts:
        _commit(writer, "trades", part, offset)
        offset += part.height
    table = tables["trades"].refresh()
    snaps = sorted(table.snapshots(), key=lambda s: s.timestamp_ms)
    times = [s.timestamp_ms for s in snaps]
    assert times == sorted(set(times))  # strictly increasing
    stamps = table.scan().to_arrow().column(STAMP_COLUMN).unique().to_pylist()
    assert sorted(stamps) == times
    assert without_stamp(table.schema().as_arrow()).names == [
        n for n in table.schema().column_names if n != STAMP_COLUMN
    ]
