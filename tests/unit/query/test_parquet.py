"""Cold reads for the hot-row cache (``k2.query.parquet``): what DuckDB's read gave, only the row
groups that can hold the symbols, footers read once, and a clear error for a file that is gone."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from pyarrow import fs as pafs

from k2.lake.stamp import STAMP_COLUMN
from k2.query.engine import QueryEngine
from k2.query.errors import QueryError
from k2.query.params import TimeRange
from k2.query.parquet import DataFiles, Footer
from k2.query.rows import FileRows
from k2.query.runner import DuckRunner
from tests.unit.query.conftest import Lake
from tests.unit.query.lakedata import append_commits, asx_frames, new_catalog

DAY = TimeRange(datetime(2014, 3, 12, tzinfo=UTC), datetime(2014, 3, 13, tzinfo=UTC))


def _files(lake: Lake, table: str) -> list[str]:
    return [str(p) for p in lake.tables[table].refresh().inspect.files()["file_path"].to_pylist()]


def test_a_file_reads_as_duckdb_read_it(asx_lake: Lake) -> None:
    runner = DuckRunner()
    files = DataFiles()
    for table in ("trades", "quotes"):
        for path in _files(asx_lake, table)[:4]:
            duck = runner.table(
                "t", "SELECT * FROM read_parquet(?, union_by_name = true)", [[path]], timeout_s=30
            )
            # DuckDB also made columns of the path's partition names (exchange_day=…): no query reads them
            duck = duck.drop_columns(
                [c for c in (STAMP_COLUMN, "exchange_day", "symbol_bucket") if c in duck.column_names]
            )
            ours = files.read("t", path)
            assert STAMP_COLUMN not in ours.column_names
            assert ours.schema.equals(duck.schema, check_metadata=True), (ours.schema, duck.schema)
            assert ours.equals(duck)
            symbol = ours["symbol"][0].as_py()
            alone = FileRows.of(files.read("t", path, [symbol])).only(symbol).table
            assert alone.equals(FileRows.of(duck).only(symbol).table)
    runner.close()


def test_a_read_for_symbols_decodes_only_the_row_groups_that_can_hold_them(tmp_path: Path) -> None:
    path = str(tmp_path / "f.parquet")
    ts = pa.array(range(16), pa.timestamp("us", "UTC"))
    table = pa.table(
        {"symbol": ["A"] * 4 + ["B"] * 4 + ["C"] * 4 + ["D"] * 4, "exchange_ts": ts, "x": list(range(16))}
    )
    pq.write_table(table, path, row_group_size=3)  # groups: AAA ABB BBC CCC DDD D
    files = DataFiles()
    assert files.footer(path).groups(["B"]) == [1, 2]
    assert files.footer(path).groups(["A", "D"]) == [0, 1, 4, 5]
    assert files.footer(path).groups(["Z"]) == []
    for symbols in (["B"], ["A", "D"], ["C"]):
        got = FileRows.of(files.read("t", path, symbols))
        for symbol in symbols:
            want = table.filter(pc.equal(table["symbol"], symbol))
            assert got.only(symbol).table["x"].to_pylist() == want["x"].to_pylist()
    assert files.read("t", path, ["Z"]).num_rows == 0
    blind = str(tmp_path / "no-stats.parquet")
    pq.write_table(table, blind, row_group_size=3, write_statistics=False)
    assert files.footer(blind).groups(["B"]) == list(range(6))  # no statistics: every group may hold B
    assert files.read("t", blind, ["B"]).num_rows == 16


def test_footers_are_read_once_and_bounded(tmp_path: Path) -> None:
    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"{i}.parquet"))
        pq.write_table(pa.table({"symbol": ["A"], "x": [i]}), paths[-1])
    files = DataFiles(max_footers=2)
    first = files.footer(paths[0])
    assert files.footer(paths[0]) is first
    assert [files.read("t", p)["x"][0].as_py() for p in paths] == [0, 1, 2]
    assert len(files) == 2  # the least recently read went
    files.forget([paths[2], "file:///never-read.parquet"])
    assert len(files) == 1
    assert isinstance(files.footer(f"file://{paths[0]}"), Footer)


def test_a_missing_or_damaged_file_is_a_query_error(tmp_path: Path) -> None:
    files = DataFiles()
    with pytest.raises(QueryError, match="the trades_rows query failed: FileNotFoundError"):
        files.read("trades_rows", str(tmp_path / "gone.parquet"))
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet at all" * 10)
    with pytest.raises(QueryError, match="reading a data file"):
        files.read("trades_rows", str(junk))
    with pytest.raises(QueryError):
        files.read("trades_rows", "s3://bucket/a.parquet")  # no S3 filesystem given
    with pytest.raises(QueryError):
        DataFiles(pafs.LocalFileSystem()).read("trades_rows", "gs://bucket/a.parquet")


def test_s3_paths_read_through_the_filesystem_given(tmp_path: Path) -> None:
    """A local directory stands in for the bucket: what is checked is the routing of s3:// paths."""
    (tmp_path / "bucket" / "t").mkdir(parents=True)
    pq.write_table(pa.table({"symbol": ["A", "B"], "x": [1, 2]}), tmp_path / "bucket" / "t" / "a.parquet")
    files = DataFiles(pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem()))
    for scheme in ("s3", "s3a", "s3n"):
        assert files.read("t", f"{scheme}://bucket/t/a.parquet", ["B"])["x"].to_pylist() == [1, 2]


def test_a_cold_query_of_a_deleted_data_file_fails_clearly_and_the_next_file_still_reads(
    tmp_path: Path,
) -> None:
    catalog, tables = new_catalog(tmp_path)
    frames = asx_frames()
    append_commits(tables["trades"], frames["trades"], 2)
    engine = QueryEngine(catalog, "k2", refresh_interval_s=0, row_cache_rows=1_000_000)
    paths = tables["trades"].refresh().inspect.files()["file_path"].to_pylist()
    victim = next(p for p in paths if "2014-03-12" in p)
    Path(victim.removeprefix("file://")).unlink()
    with pytest.raises(QueryError, match="failed"):
        engine.ticks("trades", ("BHP",), DAY, limit=100_000)
    other = TimeRange(datetime(2014, 3, 11, tzinfo=UTC), datetime(2014, 3, 12, tzinfo=UTC))
    assert engine.ticks("trades", ("BHP",), other, limit=100_000).table.num_rows > 0
    engine.close()


def test_a_busy_symbol_is_read_by_row_group_only_where_its_window_is(tmp_path: Path) -> None:
    """Row groups of 500 rows: BHP's day spans dozens; a 15-minute window reads a few of them, and
    every answer (windows, two symbols, pages, the as-of join) equals reading Parquet directly."""
    from datetime import timedelta

    from k2.query.rows import LONG_RUN_GROUPS

    catalog, tables = new_catalog(tmp_path)
    for name in ("trades", "quotes"):
        with tables[name].transaction() as txn:
            txn.set_properties({"write.parquet.row-group-limit": "500"})
    frames = asx_frames()
    for name in ("trades", "quotes"):
        append_commits(tables[name].refresh(), frames[name], 1)
    hot = QueryEngine(catalog, "k2", refresh_interval_s=0, row_cache_rows=1_000_000)
    plain = QueryEngine(catalog, "k2", refresh_interval_s=0, row_cache_rows=0)
    path = next(p for p in _files_of(tables["trades"]) if "2014-03-12" in p)
    footer = hot.reader.parquet.footer(path)
    assert len(footer.groups(["BHP"])) > LONG_RUN_GROUPS * 5

    start = datetime(2014, 3, 12, 0, 0, tzinfo=UTC)
    for minutes in (0, 15, 200, 330, 1000):  # the open, the day, after the close
        window = TimeRange(start + timedelta(minutes=minutes), start + timedelta(minutes=minutes + 15))
        got = hot.ticks("trades", ("BHP",), window, limit=100_000).table
        assert got.equals(plain.ticks("trades", ("BHP",), window, limit=100_000).table)
    keys = [k for k in hot.reader.rows._items if isinstance(k, tuple)]
    grouped = [k for k in keys if k[1].startswith("\x00group")]
    assert grouped and not any(k[1] == "BHP" for k in keys)  # BHP was read by row group, not whole
    assert len({k for k in grouped if k[0] == path}) < len(footer.groups(["BHP"])) // 2

    day = TimeRange(start, start + timedelta(days=1))
    both = hot.ticks("trades", ("BHP", "RIO"), day, limit=100_000).table
    assert both.equals(plain.ticks("trades", ("BHP", "RIO"), day, limit=100_000).table)
    page = hot.ticks("trades", ("BHP",), day, limit=700)
    assert page.table.equals(plain.ticks("trades", ("BHP",), day, limit=700).table) and page.next_cursor
    following = hot.ticks("trades", ("BHP",), day, limit=700, cursor=page.next_cursor).table
    assert following.equals(plain.ticks("trades", ("BHP",), day, limit=700, cursor=page.next_cursor).table)
    joined = hot.trades_with_quotes(("BHP",), day, 300_000_000).table
    assert joined.num_rows > 1000 and joined.equals(
        plain.trades_with_quotes(("BHP",), day, 300_000_000).table
    )
    hot.close()
    plain.close()


def _files_of(table: object) -> list[str]:
    return [str(p) for p in table.refresh().inspect.files()["file_path"].to_pylist()]  # type: ignore[attr-defined]


def test_a_symbols_entry_holds_only_its_own_rows(tmp_path: Path) -> None:
    """A one-symbol miss decodes whole row groups; its entry must not keep the whole read alive
    while the cache counts only its slice (200 symbols' misses held 200 copies of the file)."""
    import gc
    from types import SimpleNamespace

    import numpy as np

    from k2.query import rows as rows_mod

    symbols = np.repeat([f"S{i:03d}" for i in range(50)], 400)
    ts = pa.array(np.tile(np.arange(400), 50), pa.timestamp("us", "UTC"))
    table = pa.table({"symbol": symbols, "exchange_ts": ts, "sequence": np.arange(symbols.size),
                      "payload": [f"{i:040d}" for i in range(symbols.size)]})  # fmt: skip
    path = str(tmp_path / "wide.parquet")
    pq.write_table(table, path, row_group_size=symbols.size)  # one row group of every symbol
    reader = SimpleNamespace(parquet=DataFiles(), limits=SimpleNamespace(timeout_s=30))
    cache = rows_mod.RowCache(max_rows=10_000_000, max_bytes=1 << 40)
    gc.collect()
    before = pa.total_allocated_bytes()
    for symbol in sorted(set(symbols)):
        (entry,) = rows_mod._load_symbols(reader, cache, "trades", [(path, symbol)])  # type: ignore[arg-type]
        assert entry.table.num_rows == 400 and entry.table.get_total_buffer_size() < 2 * entry.table.nbytes
    gc.collect()
    assert pa.total_allocated_bytes() - before < 3 * table.nbytes  # not 50 copies of the file


def test_row_groups_count_against_the_bound_on_one_scan(tmp_path: Path) -> None:
    """One cold query of a busy symbol over every day must not flush the hot set, row groups or not."""
    from k2.query.rows import prefetch

    catalog, tables = new_catalog(tmp_path)
    with tables["trades"].transaction() as txn:
        txn.set_properties({"write.parquet.row-group-limit": "500"})
    append_commits(tables["trades"].refresh(), asx_frames()["trades"], 1)
    from k2.query.files import Prune
    from k2.query.params import TimeTravel

    year = TimeRange(datetime(2014, 1, 1, tzinfo=UTC), datetime(2015, 1, 1, tzinfo=UTC))
    probe = QueryEngine(catalog, "k2", refresh_interval_s=0)
    scan = probe.reader.scan("trades", TimeTravel(), Prune(("BHP",), year.start_us, year.end_us))
    estimate = sum(scan.records.values()) // 4  # what the files alone let through
    # a cache whose quarter passes that estimate, but not BHP's row groups (91,631 rows and more)
    engine = QueryEngine(catalog, "k2", refresh_interval_s=0, row_cache_rows=4 * (estimate + 1_000))
    files = tables["trades"].refresh().inspect.files()
    records = dict(zip(files["file_path"].to_pylist(), files["record_count"].to_pylist(), strict=True))
    hot = sorted(records, key=lambda p: records[p])[len(records) // 2]
    prefetch(engine.reader, "trades", [hot])
    held = engine.reader.rows.rows
    assert estimate + 1_000 < 91_631 and held > 0
    assert engine.ticks("trades", ("BHP",), year, limit=100_000).table.num_rows > 50_000
    assert engine.reader.rows.get(hot) is not None and engine.reader.rows.rows == held
    engine.close()


@pytest.mark.parametrize("kind", ["ms", "ns", "dictionary", "sydney", "null symbol"])
def test_another_writers_file_reads_in_duckdbs_types(tmp_path: Path, kind: str) -> None:
    """A file's stored Arrow schema must not bring back other units, dictionaries or time zones:
    the cache compares times as µs UTC, and pieces of different types cannot be concatenated."""
    import pyarrow.compute as pc

    base = pa.array([1_000_000, 2_000_000, 3_000_000], pa.timestamp("us", "UTC"))
    ts = {
        "ms": pc.cast(base, pa.timestamp("ms", "UTC")),
        "ns": pc.cast(base, pa.timestamp("ns", "UTC")),
        "sydney": pc.cast(base, pa.timestamp("us", "Australia/Sydney")),
    }.get(kind, base)
    symbol: pa.Array = pa.array(["A", "B", None if kind == "null symbol" else "B"])
    if kind == "dictionary":
        symbol = pc.dictionary_encode(symbol)
    path = str(tmp_path / f"{kind}.parquet".replace(" ", "-"))
    pq.write_table(pa.table({"symbol": symbol, "exchange_ts": ts, "sequence": [1, 2, 3]}), path)
    got = DataFiles().read("t", path, ["B"])
    duck = DuckRunner().table("t", "SELECT * FROM read_parquet(?)", [[path]], timeout_s=30)
    assert got.schema.field("symbol").type == pa.string()
    assert got.schema.field("exchange_ts").type == pa.timestamp("us", "UTC")
    if kind != "ns":  # DuckDB keeps nanoseconds apart; the cache's times are µs (truncated)
        assert duck.schema.field("exchange_ts").type == pa.timestamp("us", "UTC")
    wanted = [2] if kind == "null symbol" else [2, 3]
    only = FileRows.of(got).only("B")
    assert only.ts.tolist() == [w * 1_000_000 for w in wanted]
    assert only.window(["B"], 0, 10**12)[0]["sequence"].to_pylist() == wanted
