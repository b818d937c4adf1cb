"""Unattended upkeep against the real broker: bounded metadata, exactly-once under maintenance."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from k2.config import Settings
from k2.lake import ensure_tables, open_catalog
from k2.lake.retention import checkpoints
from tests.integration.test_pipeline import _env, _ingest, _produce, make_trades
from tests.integration.truth_check import assert_matches_truth, deliveries, publish, simulator

pytestmark = pytest.mark.integration

TINY_COMMITS = {"K2_LAKE__COMMIT_ROWS": "100", "K2_PIPELINE__BATCH_MAX_MESSAGES": "100"}


def _metadata_jsons(settings: Settings, name: str) -> list[Path]:
    table = open_catalog(settings).load_table(f"{settings.lake.namespace}.{name}")
    return list((Path(table.location().removeprefix("file://")) / "metadata").glob("*.metadata.json"))


def test_metadata_files_stay_bounded_with_the_defaults(settings: Settings) -> None:
    """No setting changed: 60+ commits leave at most previous-versions-max + 1 metadata.json."""
    _produce(settings, make_trades(6_500))
    proc = _ingest(settings, "--idle-timeout", "4", **TINY_COMMITS)
    out = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, out[-3000:]

    table = open_catalog(settings).load_table(f"{settings.lake.namespace}.trades")
    assert len(table.snapshots()) >= 60
    assert table.scan().to_arrow().num_rows == 6_500
    assert len(table.metadata.metadata_log) <= 20
    assert len(_metadata_jsons(settings, "trades")) <= 21  # 20 previous versions + the current one


def test_topics_are_created_with_bounded_retention(settings: Settings) -> None:
    from confluent_kafka.admin import ConfigResource

    from k2.resilience.spill import ensure_spill_topics
    from k2.stream.admin import admin_client, ensure_topics

    ensure_topics(settings.kafka)
    ensure_spill_topics(settings.kafka)
    admin = admin_client(settings.kafka)
    names = [settings.kafka.topic(n) for n in ("trades", "quotes", "dlq", "spill.trades")]
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in names]
    for resource, future in admin.describe_configs(resources).items():
        config = {k: v.value for k, v in future.result(timeout=30).items()}
        assert config["retention.ms"] == str(settings.kafka.retention_ms), resource
        assert config["segment.ms"] == str(settings.kafka.segment_ms), resource


def test_maintenance_concurrent_with_ingest_keeps_exactly_once(settings: Settings, tmp_path: Path) -> None:
    """Ingest maintains its tables every second while a second process, `k2 lake maintain --every`,
    compacts, checkpoints, expires and deletes orphans beside it: every unique tick lands once."""
    sim = simulator(12_000, seed=5)
    publish(settings, deliveries(sim))
    truth_file = tmp_path / "truth.json"
    sim.write_truth(truth_file)
    busy = {
        "K2_LAKE__MAINTAIN_EVERY_S": "1",
        "K2_LAKE__DENSE_MINUTES": "0",
        "K2_LAKE__KEEP_SNAPSHOTS": "3",
        "K2_LAKE__CHECKPOINT_MINUTES": "0.02",
        "K2_LAKE__COLD_MINUTES": "0.05",
        "K2_LAKE__ORPHAN_GRACE_MINUTES": "0.25",
    }
    ensure_tables(open_catalog(settings), settings.lake.namespace)  # `k2 lake maintain` needs them
    small = {"K2_LAKE__COMMIT_ROWS": "300", "K2_PIPELINE__BATCH_MAX_MESSAGES": "300"}
    ingest = _ingest(settings, "--idle-timeout", "8", **small, **busy)
    maintain = subprocess.Popen(
        [sys.executable, "-m", "k2.cli", "lake", "maintain", "--every", "0.5"],
        env=_env(settings, **busy),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        out = ingest.communicate(timeout=280)[0].decode()
        assert ingest.returncode == 0, out[-3000:]
    finally:
        maintain.terminate()
        maintained = maintain.communicate(timeout=120)[0].decode()
    assert "maintenance pass 2 " in maintained, maintained[-3000:]

    assert_matches_truth(settings, json.loads(truth_file.read_text()))
    table = open_catalog(settings).load_table(f"{settings.lake.namespace}.trades")
    assert checkpoints(table), "no checkpoint was tagged"
    assert len(table.snapshots()) < 100
    files = [task.file for task in table.scan().plan_files()]
    assert len(files) < 50  # the commits' small files (8 per commit) were compacted
