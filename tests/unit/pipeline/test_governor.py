"""The governor: a stall pauses every partition and is counted once; status says what it holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from confluent_kafka import TopicPartition

from k2.config import load_settings
from k2.lake.errors import LakeError
from k2.pipeline.batch import PipelineStats
from k2.pipeline.checkpoint import Checkpoint
from k2.pipeline.governor import Governor, dependency_breakers
from k2.resilience.status import status_path
from tests.unit.pipeline.fakes import FakeSpill, RecordingChecks, sink, trades_schema

SOURCE, SPILL = "k2.trades", "k2.spill.trades"


class Consumer:
    def __init__(self, owned: list[tuple[str, int]]) -> None:
        self.owned = owned
        self.paused: set[tuple[str, int]] = set()

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in self.owned]

    def pause(self, parts: list[TopicPartition]) -> None:
        self.paused |= {(p.topic, p.partition) for p in parts}

    def resume(self, parts: list[TopicPartition]) -> None:
        self.paused -= {(p.topic, p.partition) for p in parts}

    def position(self, parts: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(p.topic, p.partition, 10) for p in parts]

    def get_watermark_offsets(self, tp: Any, cached: bool = False) -> tuple[int, int]:
        return 0, 25


def _governor(tmp_path: Path) -> tuple[Governor, Consumer, PipelineStats]:
    # the RSS signal reads this very process: after a thousand tests pytest holds gigabytes, which
    # must not raise the level here (memory pressure has its own tests)
    settings = load_settings(data_dir=tmp_path, resilience={"memory_limit_mb": 1_000_000})
    trades, _ = sink("trades", {SOURCE}, trades_schema())
    checkpoint = Checkpoint(
        gap_sink=trades,
        tick_sinks=[],
        checks=RecordingChecks(),
        flush_dead_letters=lambda: 0,
        commit_group_offsets=lambda end: None,
        max_rows=10,
        max_age_s=1,
    )
    consumer = Consumer([(SOURCE, 0), (SOURCE, 1), (SPILL, 0)])
    stats = PipelineStats()
    governor = Governor(
        settings,
        consumer=consumer,  # type: ignore[arg-type]
        checkpoint=checkpoint,
        spill=FakeSpill(),  # type: ignore[arg-type]
        stats=stats,
        breakers=dependency_breakers(settings.resilience),
        source_topics={SOURCE},
        spill_topics={SPILL},
    )
    return governor, consumer, stats


def test_a_stall_pauses_every_partition_counts_once_and_the_resume_releases_them(tmp_path: Path) -> None:
    governor, consumer, stats = _governor(tmp_path)
    governor.stall(LakeError("disk on fire"), wait=0.2, kept=True, reseek=False)
    governor.stall(LakeError("still on fire"), wait=0.2, kept=True, reseek=False)  # a failed retry
    assert consumer.paused == {(SOURCE, 0), (SOURCE, 1), (SPILL, 0)}
    assert stats.stalls == 1 and governor.status()["stall_cause"] == "disk on fire"
    written = json.loads(status_path(tmp_path).read_text())
    assert written["stalled"] is True and written["running"] is True
    governor.observe()  # the level's flow control keeps a stall's pause
    assert consumer.paused == {(SOURCE, 0), (SOURCE, 1), (SPILL, 0)}
    governor.resume()
    assert consumer.paused == set() and not governor.status()["stalled"]


def test_observe_measures_the_lag_of_the_source_partitions_only(tmp_path: Path) -> None:
    governor, _, _ = _governor(tmp_path)
    governor.observe()
    status = governor.status()
    assert status["signals"]["lag"] == 30 and status["signals"]["peak_lag"] == 30  # 2 x (25 - 10)
    assert status["signals"]["lags"] == [
        {"topic": SOURCE, "partition": 0, "lag": 15},
        {"topic": SOURCE, "partition": 1, "lag": 15},
    ]
    assert not governor.deferring


def test_status_carries_rate_commit_and_quality_for_the_dashboard(tmp_path: Path) -> None:
    governor, _, stats = _governor(tmp_path)
    assert governor.status()["commit"] == {"count": 0, "last_s": None, "last_at": None}
    governor.checkpoint.counted(0.25)
    stats.messages, stats.dead_letters = 100, 1
    stats.latest_dead_letters.append({"at": "t", "reason": "price <= 0", "source": "s"})
    status = json.loads(json.dumps(governor.status()))  # what the file holds
    assert status["commit"]["count"] == 1 and status["commit"]["last_s"] == 0.25
    assert status["commit"]["last_at"].endswith("+00:00")
    assert status["rate"]["messages_per_s"] >= 0
    assert status["quality"]["dead_letters"] == 1
    assert status["quality"]["latest_dead_letters"][0]["reason"] == "price <= 0"
    assert set(status["quality"]["gaps_recorded"]) == {"trades", "quotes"}


def test_a_new_assignment_during_a_stall_starts_paused(tmp_path: Path) -> None:
    governor, consumer, _ = _governor(tmp_path)
    governor.stall(LakeError("down"), wait=0.2, kept=False, reseek=True)
    consumer.paused.clear()  # librdkafka forgets pauses on a new assignment
    governor.assigned()
    assert consumer.paused == {(SOURCE, 0), (SOURCE, 1), (SPILL, 0)}
    governor.stall_dropped()
    assert not governor.status()["stalled"]
