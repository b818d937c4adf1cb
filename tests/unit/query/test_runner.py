"""DuckDB execution: bound parameters, timeouts that interrupt."""

from __future__ import annotations

import time
from typing import Any

import pyarrow as pa
import pytest

from k2.query.errors import QueryBusyError, QueryError, QueryTimeoutError
from k2.query.runner import DuckRunner


def test_values_are_bound_not_spliced() -> None:
    runner = DuckRunner()
    hostile = "x'); DROP TABLE t; --"
    out = runner.table("t", "SELECT ? AS v, count(*) AS n FROM _t WHERE s = ?", [hostile, hostile],
                       timeout_s=5, tables={"_t": pa.table({"s": ["a", hostile]})})  # fmt: skip
    assert out.to_pylist() == [{"v": hostile, "n": 1}]


def test_timeout_interrupts_the_query() -> None:
    runner = DuckRunner()
    started = time.perf_counter()
    with pytest.raises(QueryTimeoutError, match=r"longer than 0.2 s \(api.query_timeout_s\)") as info:
        runner.table("bars", "SELECT count(*) FROM range(10000000000) a, range(10) b", [], timeout_s=0.2)
    assert time.perf_counter() - started < 5
    assert info.value.status_code == 504


def test_streaming_timeout_applies_per_batch() -> None:
    runner = DuckRunner()
    batches = runner.stream("replay", "SELECT * FROM range(10000) t(i)", [], batch_rows=1000, timeout_s=5)
    assert sum(b.num_rows for b in batches) == 10000


def test_errors_are_query_errors_without_internals() -> None:
    runner = DuckRunner()
    with pytest.raises(QueryError, match="the trades query failed: IOException"):
        runner.table(
            "trades", "SELECT * FROM read_parquet(?)", [["/nonexistent/secret/path.parquet"]], timeout_s=5
        )


def test_a_full_runner_refuses_with_busy_instead_of_queueing(tmp_path: Any) -> None:
    runner = DuckRunner(max_concurrent=1, memory_limit="256MB", temp_directory=str(tmp_path / "spill"))
    assert runner.setting("memory_limit") in ("256.0 MiB", "244.1 MiB", "256.0 MB", "244.1 MB")
    assert runner.setting("temp_directory") == str(tmp_path / "spill")
    with runner._slot("held"):  # one query under way holds the only slot
        with pytest.raises(QueryBusyError) as info:
            runner.table("quick", "SELECT 1", [], timeout_s=1)
        with pytest.raises(QueryBusyError):
            next(runner.stream("replay", "SELECT 1", [], batch_rows=10, timeout_s=1))
    assert info.value.status_code == 503 and info.value.retry_after >= 1
    assert "api.max_concurrent_queries" in str(info.value)
    assert runner.table("quick", "SELECT 1 AS x", [], timeout_s=1).column("x").to_pylist() == [1]
