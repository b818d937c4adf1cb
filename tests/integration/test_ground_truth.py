"""Sequence verdicts against the simulator's exact truth, on both state backends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from k2.config import Settings, load_settings
from k2.observability.metrics import REGISTRY, sample
from k2.pipeline import Pipeline
from k2.pipeline.sequencing import sequence_checks
from tests.integration.truth_check import K2_WINDOW, assert_matches_truth, deliveries, publish, simulator


@pytest.mark.parametrize("backend", ["embedded", "redis"])
def test_gaps_duplicates_and_late_fills_equal_the_truth(
    settings: Settings, backend: str, tmp_path: Path
) -> None:
    settings = load_settings(
        **{
            **settings.model_dump(),
            "state": {"backend": backend, "reorder_window": K2_WINDOW},
            # maintenance scheduled inside the ingest: compaction must not change a single row
            "lake": {"commit_rows": 5_000, "maintain_every_s": 0.5},
        }
    )
    sim = simulator(60_000)
    publish(settings, deliveries(sim))
    truth_file = tmp_path / "truth.json"
    sim.write_truth(truth_file)
    truth = json.loads(truth_file.read_text())
    assert sum(len(truth["kinds"][k]["gaps"]) for k in ("trades", "quotes")) > 20  # faults were injected
    assert len(truth["session_resets"]) + len({s["session"] for s in truth["kinds"]["trades"]["streams"]}) > 1

    stats = Pipeline(settings, checks=sequence_checks(settings)).run(idle_timeout_s=3, max_seconds=120)

    assert_matches_truth(settings, truth)
    assert sample("k2_lake_files_per_partition_max", {"table": "trades"}) >= 1  # maintenance ran
    lag = REGISTRY.get_sample_value(
        "k2_pipeline_consumer_lag", {"topic": settings.kafka.topic("trades"), "partition": "0"}
    )
    assert lag == 0  # measured per partition, and caught up at the end
    sent_dups = sum(truth["kinds"][k]["duplicates"]["count"] for k in ("trades", "quotes"))
    assert stats.duplicates == sent_dups
    assert stats.dead_letters == sum(truth["kinds"][k]["malformed"] for k in ("trades", "quotes"))
