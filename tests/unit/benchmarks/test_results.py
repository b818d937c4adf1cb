"""Benchmark results are strict JSON, so other tools (``k2 cost``, jq, browsers) can read them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.results import write_result


def test_figures_that_could_not_be_measured_are_null_and_the_rest_rounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("K2_BENCH_RESULTS", str(tmp_path))
    path = write_result(
        "bench_x", {"rate": 1234.56789012, "short_run": float("nan"), "inf": float("inf"), "n": 3}, quick=True
    )
    text = path.read_text()
    figures = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))[
        "figures"
    ]
    assert figures == {"rate": 1234.56789, "short_run": None, "inf": None, "n": 3}
