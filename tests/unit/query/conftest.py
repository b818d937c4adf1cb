from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime

import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.table import Table

from k2.lake.stamp import without_stamp
from k2.query.engine import QueryEngine
from k2.query.reader import QueryLimits
from tests.unit.query.lakedata import append_commits, asx_frames, new_catalog

COMMITS = 6


@dataclass
class Lake:
    catalog: SqlCatalog
    tables: dict[str, Table]
    snapshots: dict[str, list[int]]


def gap_events(table: Table) -> pa.Table:
    """Three gaps: BHP trades 2014-03-11 [100, 102] recovered, RIO quotes [7, 7] and BHP trades [500, 500] open."""
    t = datetime(2014, 3, 11, 1, 0, tzinfo=UTC)
    rows = [
        ("trades", "ASX", "BHP", date(2014, 3, 11), 100, 102, 3, "opened", t, None, None, 0, 1),
        ("quotes", "ASX", "RIO", date(2014, 3, 11), 7, 7, 1, "opened", t, None, None, 0, 2),
        ("trades", "ASX", "BHP", date(2014, 3, 11), 100, 102, 3, "recovered", t, t, "ab" * 16, 0, 3),
        ("trades", "ASX", "BHP", date(2014, 3, 12), 500, 500, 1, "opened", t, None, None, 0, 4),
    ]
    schema = without_stamp(table.schema().as_arrow())  # written directly: no commit stamp
    return pa.Table.from_pylist([dict(zip(schema.names, r, strict=True)) for r in rows], schema=schema)


@pytest.fixture(scope="session")
def asx_lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    """The whole ASX sample in K2's tables, appended over several commits (shared, read-only)."""
    catalog, tables = new_catalog(tmp_path_factory.mktemp("asx-lake"))
    frames = asx_frames()
    snaps = {kind: append_commits(tables[kind], frames[kind], COMMITS) for kind in ("trades", "quotes")}
    tables["sequence_gaps"].append(gap_events(tables["sequence_gaps"]))
    return Lake(catalog, tables, snaps)


@pytest.fixture(scope="session", params=["hot-rows", "parquet"])
def shared_engine(asx_lake: Lake, request: pytest.FixtureRequest) -> Iterator[QueryEngine]:
    """The engine twice: with the hot-row cache, and reading Parquet on every query."""
    rows = 2_000_000 if request.param == "hot-rows" else 0
    engine = QueryEngine(
        asx_lake.catalog, "k2", QueryLimits(timeout_s=30), refresh_interval_s=0, row_cache_rows=rows
    )
    yield engine
    engine.close()


@pytest.fixture
def engine(shared_engine: QueryEngine) -> QueryEngine:
    return shared_engine
