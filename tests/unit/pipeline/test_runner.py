"""The runner's loop and life cycle against a broker and a lake in memory.

The pipeline under test is the real one (checkpoint, committer, governor, batch processor); only
its Kafka clients and its tables are fakes: ``FakeBroker`` plays one group member's consumer, and
each table is a ``MemoryWriter`` with the writer's fencing contract. So these tests can say what
was written, exactly once, with which offsets, after rebalances, stalls and stops.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from confluent_kafka import KafkaError, Message, TopicPartition

from k2.config import Settings, derive, load_settings
from k2.lake.errors import LakeError
from k2.pipeline import runner
from k2.pipeline.errors import ConsumerFencedError
from k2.pipeline.runner import Lake, Pipeline
from k2.schemas import encode_batch
from k2.schemas.validate import Validator
from k2.types import TopicPartition as TP
from tests.unit.pipeline.fakes import (
    FakeProducer,
    FakeSpill,
    RecordingChecks,
    sink,
    ticks,
    trades_schema,
)

GAPS_SCHEMA = (
    pl.DataFrame(schema={"event": pl.String, "kafka_partition": pl.Int32, "kafka_offset": pl.Int64})
    .to_arrow()
    .schema
)


class FakeBroker:
    """One member's consumer: a log per partition, positions, pauses, and a scripted group.

    ``group`` holds what the coordinator does at each ``consume`` call, in order: ``"assign"``
    (every partition with a log), ``"revoke"``, ``"lost"``, ``"fatal"`` (a fatal error through the
    error callback; the consumer delivers nothing more), ``"fatal-message"`` (the same as a consumer
    error message), or ``None`` (nothing).
    """

    def __init__(self, logs: dict[TP, list[bytes]], group: list[str | None]) -> None:
        self.logs = logs
        self.group = list(group)
        self.positions: dict[TP, int] = {}
        self.paused: set[TP] = set()
        self.paused_ever = False
        self.stalled: set[TP] = set()  # a leader being elected: fetches return nothing
        self.delivered: set[TP] = set()  # partitions with a position (a message consumed)
        self.commits: list[dict[TP, int]] = []
        self.callbacks: dict[str, Callable[..., None]] = {}
        self.closed = False
        self.config: dict[str, Any] = {}
        self.consumers = 0
        self.unusable = False

    def created(self, config: dict[str, Any]) -> FakeBroker:
        """``Consumer(config)``: the same broker again, as a new consumer of the group would see it."""
        self.config = config
        self.consumers += 1
        self.unusable = False
        return self

    def subscribe(self, topics: list[str], **callbacks: Callable[..., None]) -> None:
        self.callbacks = callbacks

    def consume(self, n: int, timeout: float) -> list[Message]:
        event = self.group.pop(0) if self.group else None
        if event == "assign":
            self.callbacks["on_assign"](self, [TopicPartition(t, p) for t, p in sorted(self.logs)])
        elif event == "fatal":  # librdkafka: a static member fenced; this consumer is unusable
            self.config["error_cb"](KafkaError(KafkaError._FATAL, "fenced by group.instance.id", fatal=True))
            self.unusable = True
        elif event == "fatal-message":  # the same as a consumer error message: code _FATAL, flag unset
            self.unusable = True
            return [Message(error=KafkaError(KafkaError._FATAL, "fenced by group.instance.id"))]
        elif event is not None:
            self.callbacks[f"on_{event}"](self, self.assignment())
        out: list[Message] = []
        for tp in sorted(self.positions) if not self.unusable else ():
            if tp in self.paused or tp in self.stalled:
                continue
            pos = self.positions[tp]
            taken = self.logs[tp][pos : pos + n - len(out)]
            out += [
                Message(topic=tp[0], partition=tp[1], offset=pos + i, value=v) for i, v in enumerate(taken)
            ]
            self.positions[tp] = pos + len(taken)
            if taken:
                self.delivered.add(tp)
        if not out:
            time.sleep(0.005)
        return out

    def assign(self, partitions: list[TopicPartition]) -> None:
        for p in partitions:
            self.positions[(p.topic, p.partition)] = max(p.offset, 0)  # OFFSET_BEGINNING is < 0
            self.delivered.discard((p.topic, p.partition))

    def unassign(self) -> None:
        self.positions.clear()
        self.paused.clear()

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in sorted(self.positions)]

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {(p.topic, p.partition) for p in partitions}
        self.paused_ever = True

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {(p.topic, p.partition) for p in partitions}

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """As librdkafka: no position (-1001) until the partition delivered a message."""
        return [
            TopicPartition(
                p.topic,
                p.partition,
                self.positions[(p.topic, p.partition)] if (p.topic, p.partition) in self.delivered else -1001,
            )
            for p in partitions
        ]

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool = False) -> tuple[int, int]:
        return 0, len(self.logs.get((tp.topic, tp.partition), []))

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> None:
        self.commits.append({(o.topic, o.partition): o.offset for o in offsets})

    def close(self) -> None:
        self.closed = True


class Upkeep:
    def due(self) -> bool:
        return False


class World:
    """Settings, a broker with trades on two partitions, and the tables the pipeline writes."""

    def __init__(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        group: list[str | None],
        *,
        commit_interval_s: float = 0.05,
    ) -> None:
        self.settings: Settings = load_settings(
            data_dir=tmp_path,
            pipeline={"poll_timeout_s": 0.01, "consumer": "python"},  # FakeBroker plays confluent-kafka
            lake={"commit_interval_s": commit_interval_s},
            # the level stays NORMAL (a fake broker's busy ratio means nothing); the breakers work
            resilience={"enabled": False, "breakers": {"failure_threshold": 2, "reset_timeout_s": 0.2}},
        )
        self.topic = self.settings.kafka.topic("trades")
        self.broker = FakeBroker(
            {
                (self.topic, 0): encode_batch("trades", ticks(["BHP"] * 5, [1, 2, 3, 4, 5])),
                (self.topic, 1): encode_batch("trades", ticks(["CBA"] * 3, [1, 2, 3])),
            },
            group,
        )
        self.trades, self.table = sink("trades", set(), trades_schema())
        self.gaps, self.gap_table = sink("sequence_gaps", set(), GAPS_SCHEMA)
        self.checks = RecordingChecks()
        # what the committing run deferred, per source partition, and what the rebuild asked for
        self.deferred: dict[tuple[str, int], set[int]] = {}
        self.asked: list[tuple[str, int, int, int, int]] = []

        def deferred_rows(
            settings: Settings, writer: Any, *, kind: str, topic: str, partition: int, start: int, end: int,
            spill: str, spill_from: int,
        ) -> set[int]:  # fmt: skip
            self.asked.append((topic, partition, start, end, spill_from))
            return self.deferred.get((topic, partition), set())

        def open_lake(settings: Settings, topics: set[str]) -> Lake:
            self.trades.topics = {t for t in topics if t.endswith("trades")}
            self.gaps.topics = topics
            return Lake([self.trades], self.gaps, Upkeep(), Validator(300))  # type: ignore[arg-type]

        monkeypatch.setattr(runner, "open_lake", open_lake)
        monkeypatch.setattr(runner, "ensure_topics", lambda kafka: None)
        monkeypatch.setattr(runner, "ensure_spill_topics", lambda kafka: None)
        monkeypatch.setattr(runner, "TickProducer", lambda kafka: FakeProducer())
        monkeypatch.setattr(runner, "Spill", FakeSpill)
        monkeypatch.setattr(runner, "Consumer", self.broker.created)
        monkeypatch.setattr(runner, "deferred_rows", deferred_rows)

    def pipeline(self) -> Pipeline:
        return Pipeline(self.settings, checks=self.checks)

    def written(self) -> dict[tuple[str, int], list[int]]:
        """Sequences per (symbol, kafka_offset) partition, in table order: a row twice shows twice."""
        rows = self.table.rows
        out: dict[tuple[str, int], list[int]] = {}
        if rows.is_empty():
            return out
        for symbol, partition, offset in rows.select("symbol", "kafka_partition", "kafka_offset").iter_rows():
            out.setdefault((symbol, partition), []).append(offset)
        return out


EVERYTHING = {("BHP", 0): [0, 1, 2, 3, 4], ("CBA", 1): [0, 1, 2]}


def test_a_clean_run_writes_every_row_once_with_its_offsets_then_closes_the_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(tmp_path, monkeypatch, ["assign"])
    pipeline = world.pipeline()
    assert pipeline.idle and not pipeline.status()["stalled"]  # built, nothing read yet
    stats = pipeline.run(idle_timeout_s=0.3, max_seconds=20)
    assert world.written() == EVERYTHING
    assert world.table.head == {(world.topic, 0): 5, (world.topic, 1): 3}
    state = {tp: end for commit in world.checks.committed for tp, end in commit.items()}
    assert state == {(world.topic, 0): 5, (world.topic, 1): 3}  # the state is fenced by the same ends
    assert world.checks.calls[-1] == ("close", None) and pipeline.idle
    assert world.broker.commits[-1] == {(world.topic, 0): 5, (world.topic, 1): 3}  # advisory step 5
    assert stats.messages == 8 and stats.commits >= 1 and world.broker.closed
    assert not stats.uncommitted


def test_a_restart_reads_from_the_lowest_stage_watermark_and_writes_nothing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(tmp_path, monkeypatch, ["assign"])
    world.table.head = {(world.topic, 0): 3, (world.topic, 1): 3}  # the last run's commit
    world.gap_table.head = dict(world.table.head)
    world.checks.tokens = {(world.topic, 0): 1}  # its state commit was lost: the state replays from 1
    world.pipeline().run(idle_timeout_s=0.3, max_seconds=20)
    assert world.written() == {("BHP", 0): [3, 4]}
    assert world.checks.calls[1] == ("process", 4)  # offsets 1-4 re-read: the state rebuilds 1 and 2


def test_a_rebuild_leaves_out_the_rows_the_committing_run_deferred(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Below the table's watermark the decision is the committing run's (``deferrals.py``), not the
    level's now: offset 2 went to the spill then, so the rebuilt state must not see it (its spill
    copy fills its place when back-filled); offsets 1 and 3 were applied then and are applied again."""
    world = World(tmp_path, monkeypatch, ["assign"])
    world.table.head = {(world.topic, 0): 4, (world.topic, 1): 3}
    world.gap_table.head = {(world.topic, 0): 0, (world.topic, 1): 3}  # the gap table lags (no events)
    world.checks.tokens = {(world.topic, 0): 1, (world.topic, 1): 3}
    world.deferred = {(world.topic, 0): {2}}
    world.pipeline().run(idle_timeout_s=0.3, max_seconds=20)
    # only where a tick table is ahead of the state, from the state's token (not the lagging gap table's)
    assert world.asked == [(world.topic, 0, 1, 4, -1)]
    assert sorted(o for p, o in world.checks.seen if p == 0) == [0, 1, 3, 4]
    assert world.written() == {("BHP", 0): [4]}


def test_a_revoke_commits_what_was_read_before_the_partitions_leave(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(tmp_path, monkeypatch, ["assign", None, "revoke"], commit_interval_s=3600)
    world.pipeline().run(idle_timeout_s=0.3, max_seconds=20)
    assert world.written() == EVERYTHING  # committed by the revoke: no interval had passed
    assert world.table.head == {(world.topic, 0): 5, (world.topic, 1): 3}
    assert ("revoke", [(world.topic, 0), (world.topic, 1)]) in world.checks.calls
    assert not world.broker.positions  # unassigned


def test_lost_partitions_commit_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(tmp_path, monkeypatch, ["assign", None, "lost"], commit_interval_s=3600)
    world.pipeline().run(idle_timeout_s=0.3, max_seconds=20)
    assert world.written() == {} and world.table.head == {}  # the new owner replays them


def _after(seconds: float, fn: Callable[[], Any]) -> threading.Timer:
    timer = threading.Timer(seconds, fn)
    timer.start()
    return timer


def test_a_lake_outage_stalls_and_pauses_then_the_kept_commit_lands_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(tmp_path, monkeypatch, ["assign"])
    world.table.fail = LakeError("disk on fire")
    pipeline = world.pipeline()
    seen: list[bool] = []
    _after(0.6, lambda: seen.append(pipeline.status()["stalled"]))
    _after(0.8, lambda: setattr(world.table, "fail", None))
    stats = pipeline.run(idle_timeout_s=0.5, max_seconds=20)
    assert seen == [True] and world.broker.paused_ever and stats.stalls == 1
    assert world.written() == EVERYTHING and not pipeline.status()["stalled"]


def test_a_state_store_down_while_classifying_re_reads_from_the_watermarks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(tmp_path, monkeypatch, ["assign"])
    world.checks.fail = True
    _after(0.5, lambda: setattr(world.checks, "fail", False))
    stats = world.pipeline().run(idle_timeout_s=0.5, max_seconds=20)
    assert stats.stalls >= 1
    assert world.written() == EVERYTHING  # the dropped batch was read again, and written once
    assert sum(1 for name, _ in world.checks.calls if name == "assign") >= 2  # the re-seek re-assigned


def test_a_clean_stop_with_the_lake_down_leaves_the_range_and_the_checks_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(tmp_path, monkeypatch, ["assign"])
    world.table.fail = LakeError("disk on fire")
    pipeline = world.pipeline()
    _after(0.5, pipeline.stop)
    stats = pipeline.run(max_seconds=20)
    assert world.written() == {} and world.table.head == {}
    assert ("close", None) not in world.checks.calls  # the next run reads the range again
    assert stats.uncommitted  # `k2 ingest` says so and exits 75, for its supervisor


def test_max_messages_ends_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(tmp_path, monkeypatch, ["assign"])
    stats = world.pipeline().run(max_messages=1, max_seconds=20)
    assert stats.messages == 8  # one consume returned all of them; all are committed at the stop
    assert world.written() == EVERYTHING


def test_a_partition_whose_leader_is_away_is_not_idleness(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing arrives for longer than the idle timeout, but the high watermark stands ahead of the
    position (a SIGKILLed broker's partitions waiting for a new leader): the run waits for them."""
    world = World(tmp_path, monkeypatch, ["assign"])
    world.broker.stalled = {(world.topic, 1)}
    _after(1.0, world.broker.stalled.clear)  # the election is over
    world.pipeline().run(idle_timeout_s=0.3, max_seconds=20)
    assert world.written() == EVERYTHING


def test_a_partition_that_never_comes_back_ends_the_run_after_four_idle_timeouts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(tmp_path, monkeypatch, ["assign"])
    world.broker.stalled = {(world.topic, 1)}
    began = time.monotonic()
    world.pipeline().run(idle_timeout_s=0.2, max_seconds=20)
    assert time.monotonic() - began < 10  # bounded: not max_seconds
    assert world.written() == {("BHP", 0): [0, 1, 2, 3, 4]}  # the stalled partition is the next run's


def test_a_consumer_fenced_mid_run_is_replaced_and_the_run_stays_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fatal consumer error (a static member fenced after a coordinator fail-over) leaves the
    consumer unusable: the runner drops the uncommitted work, builds a new consumer that joins again,
    and every row is still written once."""
    world = World(tmp_path, monkeypatch, ["assign", "fatal", "assign"], commit_interval_s=3600)
    stats = world.pipeline().run(idle_timeout_s=0.3, max_seconds=20)
    assert world.broker.consumers == 2  # the first, and its replacement
    assert world.written() == EVERYTHING
    assert stats.messages >= 8


def test_a_fatal_error_delivered_as_a_message_replaces_the_consumer_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """librdkafka delivered the fence of a static member (after a coordinator fail-over on a 3-node
    cluster) as a consumer error message, not through the error callback: the runner must see it
    there as well, or it idles out with the rest of the stream unread."""
    world = World(tmp_path, monkeypatch, ["assign", "fatal-message", None, "assign"], commit_interval_s=3600)
    world.pipeline().run(idle_timeout_s=0.3, max_seconds=20)
    assert world.broker.consumers == 2
    assert world.written() == EVERYTHING


def test_a_consumer_fenced_again_and_again_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(tmp_path, monkeypatch, ["assign", "fatal"] * 4, commit_interval_s=3600)
    world.settings = derive(world.settings, pipeline={"instance_id": "twin"})
    with pytest.raises(ConsumerFencedError, match=r"group\.instance\.id 'twin'"):
        world.pipeline().run(idle_timeout_s=5, max_seconds=20)
    assert world.broker.consumers == 4 and world.written() == {}  # nothing committed past the fences
