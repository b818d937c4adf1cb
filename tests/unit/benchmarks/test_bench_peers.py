"""bench_peers' helpers: the peers' columns, the sample mix, the answer checks and the pinned QuestDB jar."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from benchmarks.bench_peers import interleave, peer_frame
from benchmarks.bench_query import Sample
from benchmarks.peer_k2 import K2Serve
from benchmarks.peer_questdb import QuestDB, questdb_jar
from k2.query.params import TimeRange

_T0 = datetime(2014, 3, 10, 23, 0, tzinfo=UTC)


def _trades() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "message_id": ["m1", "m2"], "exchange": ["ASX", "ASX"], "symbol": ["BHP", "BHP"],
            "session": [date(2014, 3, 11)] * 2, "sequence": [1, 2], "exchange_ts": [_T0, _T0],
            "ingest_ts": [_T0, _T0], "price": [Decimal("35.5"), Decimal("35.6")],
            "size": [Decimal("100"), Decimal("7")], "trade_id": [None, "t2"], "qualifiers": ["XT", None],
            "venue": ["ASX", "ASX"], "kafka_partition": [0, 0], "kafka_offset": [0, 1],
        },
        schema_overrides={"price": pl.Decimal(18, 6), "size": pl.Decimal(18, 6),
                          "exchange_ts": pl.Datetime("us", "UTC"), "ingest_ts": pl.Datetime("us", "UTC")},
    )  # fmt: skip


def test_peer_frame_drops_lineage_and_casts_decimals() -> None:
    frame = peer_frame(_trades(), "trades", session_ts=False)
    assert frame.columns[:5] == ["symbol", "exchange", "session", "sequence", "ts"]
    assert "kafka_offset" not in frame.columns
    assert frame.schema["price"] == pl.Float64 and frame["size"].to_list() == [100.0, 7.0]
    assert frame["trade_id"].to_list() == ["", "t2"]  # chDB's String columns take no nulls
    assert frame.schema["session"] == pl.Date
    assert peer_frame(_trades(), "trades", session_ts=True).schema["session"] == pl.Datetime("us", "UTC")


def test_interleave_alternates_the_datasets_and_reuses_days_for_the_join() -> None:
    def made(dataset: str, n: int) -> list[Sample]:
        return [
            Sample(dataset, f"{dataset}{i}", TimeRange(_T0, _T0 + timedelta(minutes=15))) for i in range(n)
        ]

    samples = {d: {"a": made(d, 3), "b": made(d, 3)} for d in ("ASX", "SIM")}
    out = interleave(samples, 4)
    assert [s.symbol for s in out["a"]] == ["ASX0", "SIM0", "ASX1", "SIM1"]
    assert out["c"] == out["b"]


def test_checks_read_rows_and_sums_the_same_way() -> None:
    body = {
        "columns": [{"name": "ts"}, {"name": "bid_price"}, {"name": "ask_price"}],
        "dataset": [["x", 1.5, 1.6], ["y", None, None], ["z", 2.0, 2.25]],
    }
    assert QuestDB.check("c", body) == (3, 3.5, 3.85)
    json_bars = {"data": [{"volume": "10.5", "close": "35.5"}, {"volume": "1", "close": "35.25"}]}
    assert K2Serve.check("b", json_bars) == (2, 11.5, 70.75)
    assert K2Serve.check("a", [{"size": 3, "price": "1.5"}]) == (1, 3.0, 1.5)
    arrow = pa.table({"size": pa.array([Decimal("3")], pa.decimal128(18, 6)), "price": [1.5]})
    assert K2Serve.check("a", arrow) == (1, 3.0, 1.5)  # format=arrow: K2's decimals summed as doubles


def test_questdb_jar_is_refused_unless_it_matches_its_pin(tmp_path: Path) -> None:
    jar = tmp_path / "questdb-9.3.4" / "questdb-9.3.4.jar"
    jar.parent.mkdir()
    jar.write_bytes(b"not the jar")
    with pytest.raises(RuntimeError, match="pinned SHA-256"):
        questdb_jar(tmp_path, "9.3.4")


def test_arrow_table_sum_stays_float() -> None:
    from benchmarks.peer_chdb import ChDB

    table = pa.table({"volume": [1.0, 2.5], "close": [10.0, None]})
    assert ChDB.check("b", table) == (2, 3.5, 10.0)
