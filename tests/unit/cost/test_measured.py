"""Figures come from the benchmarks' JSON: the conservative Parquet size, Kafka value + key."""

from __future__ import annotations

from pathlib import Path

import pytest

from k2.cost.errors import MeasuredFigureError
from k2.cost.measured import load_measured
from tests.unit.cost.conftest import results_dir


def test_reads_results_directory(tmp_path: Path) -> None:
    m = load_measured(results_dir(tmp_path / "r"))
    assert m.kafka_trade_bytes == 100 and m.kafka_quote_bytes == 100
    assert (m.parquet_trade_bytes, m.parquet_quote_bytes) == (30, 40)  # the larger of ASX and simulated
    assert m.query_p50_ms == {"window": 2.0, "bars": 4.0, "asof": 10.0}
    assert "bench_ingest" in m.sources


def test_missing_figure_falls_back_to_the_package(tmp_path: Path) -> None:
    path = results_dir(tmp_path / "r")
    (path / "bench_producer.json").unlink()
    m = load_measured(path)
    assert m.broker_msgs_per_s > 0
    assert "k2/cost/data/measured.json" in m.sources["bench_producer"]


def test_figure_in_neither_source_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import k2.cost.measured as measured

    monkeypatch.setattr(measured, "_packaged", dict)
    path = results_dir(tmp_path / "r")
    (path / "bench_query.json").unlink()
    with pytest.raises(MeasuredFigureError, match="bench_query"):
        load_measured(path)
