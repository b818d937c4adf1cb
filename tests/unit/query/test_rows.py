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
