"""The hot-row cache: hits after the first read, bounded, bypassed for scans too big for it."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc

from k2.observability.metrics import sample
from k2.query.engine import QueryEngine
from k2.query.params import TimeRange
from k2.query.rows import FileRows, RowCache
from tests.unit.query.conftest import Lake

WINDOW = TimeRange(datetime(2014, 3, 12, 1, 0, tzinfo=UTC), datetime(2014, 3, 12, 1, 20, tzinfo=UTC))


def hits() -> float:
    return sample("k2_query_row_cache_total", {"table": "trades", "result": "hit"})


def test_second_query_reads_no_parquet(asx_lake: Lake) -> None:
    engine = QueryEngine(asx_lake.catalog, "k2", refresh_interval_s=0, row_cache_rows=1_000_000)
    both = engine.ticks("trades", ("RIO", "BHP"), WINDOW, limit=5000).table
    cached = len(engine.reader.rows)
    assert cached > 0
    before = hits()
    bhp = engine.ticks("trades", ("BHP",), WINDOW, limit=5000).table
    assert hits() > before and len(engine.reader.rows) == cached
    assert bhp.equals(both.filter(pc.equal(both["symbol"], "BHP")))
    plain = QueryEngine(asx_lake.catalog, "k2", refresh_interval_s=0, row_cache_rows=0)
    assert plain.ticks("trades", ("RIO", "BHP"), WINDOW, limit=5000).table.equals(both)


def test_big_scans_bypass_the_cache(asx_lake: Lake) -> None:
    engine = QueryEngine(asx_lake.catalog, "k2", refresh_interval_s=0, row_cache_rows=1000)
    whole = TimeRange(datetime(2014, 3, 9, tzinfo=UTC), datetime(2014, 3, 15, tzinfo=UTC))
    out = engine.ticks("trades", ("BHP",), whole, limit=100_000).table
    assert out.num_rows > 50_000 and len(engine.reader.rows) == 0


def test_cache_is_bounded_by_rows() -> None:
    cache = RowCache(max_rows=10)
    for i in range(5):
        table = pa.table({"symbol": ["A"] * 4, "exchange_ts": pa.array([i] * 4, pa.timestamp("us", "UTC"))})
        cache.put(f"f{i}", FileRows.of(table))
    assert cache.rows <= 10 and len(cache) == 2
    assert cache.get("f0") is None and cache.get("f4") is not None
    assert cache.get("f4").window(["A"], 4, 5)[0].num_rows == 4  # type: ignore[union-attr]


def test_cache_is_bounded_by_bytes_whichever_bound_comes_first() -> None:
    def entry(i: int, rows: int) -> FileRows:
        ts = pa.array([i] * rows, pa.timestamp("us", "UTC"))
        return FileRows.of(pa.table({"symbol": ["A"] * rows, "exchange_ts": ts, "pad": ["x" * 100] * rows}))

    one = entry(0, 1000).nbytes
    assert one > 100_000  # strings, offsets and times are counted
    cache = RowCache(max_rows=1_000_000, max_bytes=3 * one)
    for i in range(6):
        cache.put(f"f{i}", entry(i, 1000))
    assert cache.nbytes <= 3 * one and len(cache) == 3 and cache.get("f2") is None
    assert cache.capacity_rows() == 3000  # the bytes bound, at the bytes per row the cache holds
    assert cache.discard({"f3", "f4", "f5"}) == 3 and cache.nbytes == 0 and cache.rows == 0
    assert RowCache(max_rows=10, max_bytes=1 << 30).capacity_rows() == 10  # rows first


def test_settings_size_the_engine_cache(asx_lake: Lake) -> None:
    from k2.config import Settings

    settings = Settings(api={"row_cache_rows": 1234, "row_cache_mb": 5})  # type: ignore[arg-type]
    engine = QueryEngine.from_settings(settings, catalog=asx_lake.catalog)
    assert (engine.reader.rows.max_rows, engine.reader.rows.max_bytes) == (1234, 5 << 20)


def test_discard_drops_files_and_their_rows() -> None:
    from k2.query.partials import PartialCache

    rows = RowCache(100)
    rows.put("a", FileRows.of(pa.table({"symbol": ["X"], "exchange_ts": pa.array([1], pa.timestamp("us"))})))
    rows.put("b", FileRows.of(pa.table({"symbol": ["Y"], "exchange_ts": pa.array([2], pa.timestamp("us"))})))
    assert rows.discard({"a", "zz"}) == 1 and rows.rows == 1 and len(rows) == 1
    partials = PartialCache(100)
    partials.put("a", "k1", pa.table({"x": [1, 2]}))
    partials.put("a", "k2", pa.table({"x": [1]}))
    partials.put("b", "k1", pa.table({"x": [1]}))
    assert partials.discard({"a"}) == 2 and partials.rows == 1 and len(partials) == 1


def misses() -> float:
    return sample("k2_query_row_cache_total", {"table": "trades", "result": "miss"})


def test_a_miss_for_few_symbols_reads_and_caches_only_their_rows(asx_lake: Lake) -> None:
    engine = QueryEngine(asx_lake.catalog, "k2", refresh_interval_s=0, row_cache_rows=1_000_000)
    plain = QueryEngine(asx_lake.catalog, "k2", refresh_interval_s=0, row_cache_rows=0)
    bhp = engine.ticks("trades", ("BHP",), WINDOW, limit=5000).table
    assert bhp.num_rows > 0 and bhp.equals(plain.ticks("trades", ("BHP",), WINDOW, limit=5000).table)
    keys = list(engine.reader.rows._items)
    assert keys and all(isinstance(k, tuple) and k[1] == "BHP" for k in keys)  # no whole file
    assert engine.reader.rows.rows == sum(e.table.num_rows for e in engine.reader.rows._items.values())
    before = misses()
    rio = engine.ticks("trades", ("RIO",), WINDOW, limit=5000).table  # the same files, another symbol
    assert misses() > before and rio.equals(plain.ticks("trades", ("RIO",), WINDOW, limit=5000).table)
    both = engine.ticks("trades", ("RIO", "BHP"), WINDOW, limit=5000).table
    assert both.num_rows == bhp.num_rows + rio.num_rows
    before, first_hits = misses(), hits()  # files pruned for one symbol alone are read for the other once
    assert engine.ticks("trades", ("RIO", "BHP"), WINDOW, limit=5000).table.equals(both)
    assert misses() == before and hits() > first_hits
    # a symbol no file holds is remembered as empty: asked again, nothing is read
    assert engine.ticks("trades", ("NONE",), WINDOW, limit=10).table.num_rows == 0
    before = misses()
    assert engine.ticks("trades", ("NONE",), WINDOW, limit=10).table.num_rows == 0
    assert misses() == before
    many = ("BHP", "RIO", "CBA", "NAB", "ANZ")  # beyond SYMBOL_ENTRIES: whole files
    wide = engine.ticks("trades", many, WINDOW, limit=50_000).table
    assert wide.equals(plain.ticks("trades", many, WINDOW, limit=50_000).table)
    assert any(isinstance(k, str) for k in engine.reader.rows._items)


def test_symbol_entries_are_bounded_and_discarded_with_their_file() -> None:
    def one(symbol: str, n: int) -> FileRows:
        t = pa.table({"symbol": [symbol] * n, "exchange_ts": pa.array(range(n), pa.timestamp("us", "UTC"))})
        return FileRows.of(t).only(symbol)

    cache = RowCache(max_rows=100, max_items=3)
    cache.put("f", one("A", 5), "A")
    cache.put(
        "f",
        FileRows.of(pa.table({"symbol": ["A"], "exchange_ts": pa.array([1], pa.timestamp("us"))})).only("Z"),
        "Z",
    )
    assert cache.get("f", "Z") is not None and cache.get("f", "Z").table.num_rows == 0  # type: ignore[union-attr]
    cache.put("g", one("B", 2), "B")
    cache.put("h", one("C", 1), "C")  # a fourth entry: the oldest goes, although it had rows to spare
    assert len(cache) == 3 and cache.get("f", "A") is None and cache.rows == 3
    cache.put("g", FileRows.of(pa.table({"symbol": ["B"], "exchange_ts": pa.array([9], pa.timestamp("us"))})))
    assert cache.discard({"g"}, whole_only=True) == 1 and cache.get("g", "B") is not None
    assert cache.discard({"g", "f"}) == 1 and len(cache) == 1 and cache.rows == 1  # f's entries were evicted
    assert cache.get("h", "C").window(["C"], 0, 10)[0].num_rows == 1  # type: ignore[union-attr]


def test_the_settings_defaults_are_the_engine_defaults() -> None:
    from k2.config import Settings
    from k2.query.rows import DEFAULT_BYTES, DEFAULT_ROWS

    api = Settings().api
    assert (api.row_cache_rows, api.row_cache_mb << 20) == (DEFAULT_ROWS, DEFAULT_BYTES)


def test_file_rows_are_put_in_order_only_when_they_are_not() -> None:
    ts = pa.array([3, 1, 2, 2, 5], pa.timestamp("us", "UTC"))
    shuffled = pa.table({"symbol": ["B", "A", "A", "A", "C"], "exchange_ts": ts, "sequence": [1, 9, 4, 3, 7]})
    rows = FileRows.of(shuffled)
    assert list(zip(rows.table["symbol"].to_pylist(), rows.table["sequence"].to_pylist(), strict=True)) == [
        ("A", 9),
        ("A", 3),
        ("A", 4),
        ("B", 1),
        ("C", 7),
    ]
    assert rows.index == {"A": (0, 3), "B": (3, 4), "C": (4, 5)}
    ordered = rows.table
    assert FileRows.of(ordered).table.equals(ordered)
    tie = pa.table({"symbol": ["A", "A"], "exchange_ts": ts.take([2, 3]), "sequence": [5, 4]})  # same time
    assert FileRows.of(tie).table["sequence"].to_pylist() == [4, 5]
    nulls = pa.table({"symbol": ["A", "A"], "exchange_ts": ts.take([0, 1]), "sequence": pa.array([None, 1])})
    assert FileRows.of(nulls).table["sequence"].to_pylist() == [1, None]
