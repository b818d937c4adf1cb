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
