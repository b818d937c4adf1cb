"""The checkpoint: what a freeze takes, the written commit order, and what a failed step leaves."""

from __future__ import annotations

from typing import Any

import polars as pl
import pytest

from k2.lake.errors import LakeError, StaleWriterError
from k2.pipeline.checkpoint import Checkpoint
from k2.pipeline.errors import DeadLetterDeliveryError
from k2.state.errors import StateStoreError
from k2.types import Offsets
from tests.unit.pipeline.fakes import RecordingChecks, sink, ticks, trades_schema

TOPIC = "k2.trades"
GAP_ROWS = pl.DataFrame(
    {"event": ["opened"], "kafka_partition": [0], "kafka_offset": [1]},
    schema={"event": pl.String, "kafka_partition": pl.Int32, "kafka_offset": pl.Int64},
)


class Rig:
    def __init__(self, *, max_rows: int = 1000, max_age_s: float = 60.0) -> None:
        self.gaps, self.gap_table = sink("sequence_gaps", {TOPIC}, GAP_ROWS.to_arrow().schema)
        self.trades, self.trade_table = sink("trades", {TOPIC}, trades_schema())
        self.checks = RecordingChecks()
        self.steps: list[str] = []
        self.group: list[Offsets] = []
        self.undelivered = 0
        self.cp = Checkpoint(
            gap_sink=self.gaps,
            tick_sinks=[self.trades],
            checks=self.checks,
            flush_dead_letters=lambda: self.undelivered,
            commit_group_offsets=self.group.append,
            max_rows=max_rows,
            max_age_s=max_age_s,
        )
        self.cp.crash_hook = self.steps.append

    def read(self, first: int, sequences: list[int], *, gaps: bool = False) -> None:
        """What a batch does: rows into the tick sink, gap events into the gap sink, the read end."""
        n = len(sequences)
        rows = ticks(["BHP"] * n, sequences).with_columns(
            pl.lit(0, pl.Int32).alias("kafka_partition"),
            pl.Series("kafka_offset", range(first, first + n), dtype=pl.Int64),
        )
        end = {0: first + n}
        self.trades.add(TOPIC, rows, end)
        self.gaps.add(TOPIC, GAP_ROWS if gaps else GAP_ROWS.clear(), end)
        self.cp.record_read({(TOPIC, 0): first + n})


def test_freeze_takes_everything_read_and_leaves_the_live_buffers_empty() -> None:
    rig = Rig()
    assert rig.cp.freeze() is None  # nothing read: nothing to commit
    rig.read(0, [1, 2, 3])
    frozen = rig.cp.freeze()
    assert frozen is not None and frozen.end == {(TOPIC, 0): 3} and frozen.rows == 3
    assert not rig.cp.read_end and rig.trades.rows == 0
    assert rig.cp.freeze() is None


def test_the_commit_runs_the_written_order_and_step_5_only_when_asked() -> None:
    rig = Rig()
    rig.read(0, [1, 2], gaps=True)
    frozen = rig.cp.freeze()
    assert frozen is not None
    frozen.commit()
    assert rig.steps == ["dlq-flushed", "trades-committed", "gaps-committed", "state-committed"]
    assert rig.gap_table.head == rig.trade_table.head == {(TOPIC, 0): 2}
    assert rig.checks.committed == [{(TOPIC, 0): 2}] and rig.cp.commits == 1
    assert rig.group == []  # step 5 is the caller's, on the consumer thread
    frozen.commit_group_offsets()
    assert rig.group == [{(TOPIC, 0): 2}]


def test_undelivered_dead_letters_commit_nothing() -> None:
    rig = Rig()
    rig.read(0, [1])
    rig.undelivered = 2
    frozen = rig.cp.freeze()
    assert frozen is not None
    with pytest.raises(DeadLetterDeliveryError):
        frozen.commit()
    assert rig.trade_table.head == {} and rig.checks.committed == [] and rig.cp.commits == 0


def test_the_state_never_runs_ahead_of_the_tables_and_a_retry_skips_what_went_through() -> None:
    rig = Rig()
    rig.read(0, [1, 2], gaps=True)
    frozen = rig.cp.freeze()
    assert frozen is not None
    rig.trade_table.fail = LakeError("disk on fire")
    with pytest.raises(LakeError):
        frozen.commit()
    assert rig.gap_table.appends == [] and rig.checks.committed == []  # the gaps follow the ticks
    rig.trade_table.fail = None
    rig.checks.fail_commit = True
    with pytest.raises(StateStoreError):
        frozen.commit()
    rig.checks.fail_commit = False
    frozen.commit()
    assert len(rig.gap_table.appends) == 1 and len(rig.trade_table.appends) == 1  # nothing twice
    assert rig.checks.committed == [{(TOPIC, 0): 2}] and frozen.attempts == 3 and rig.cp.commits == 1


def test_a_range_another_writer_committed_is_fenced_and_nothing_after_is_written() -> None:
    rig = Rig()
    rig.read(0, [1, 2])
    frozen = rig.cp.freeze()
    assert frozen is not None
    rig.trade_table.head[(TOPIC, 0)] = 2  # a zombie's new owner got there first
    with pytest.raises(StaleWriterError):
        frozen.commit()
    assert rig.trade_table.appends == [] and rig.checks.committed == []


def test_due_by_rows_or_by_age() -> None:
    assert not Rig(max_rows=2).cp.due()  # nothing read is never due
    by_rows = Rig(max_rows=2)
    by_rows.read(0, [1])
    assert not by_rows.cp.due()
    by_rows.read(1, [2])
    assert by_rows.cp.due()
    by_age = Rig(max_age_s=0.0)
    by_age.read(0, [1])
    assert by_age.cp.due()


def test_the_gap_watermark_moves_without_events_only_now_and_then_or_at_the_final_commit() -> None:
    rig = Rig()
    rig.gaps.commit()  # the gap table committed just now
    rig.read(0, [1])
    frozen = rig.cp.freeze()
    assert frozen is not None and frozen.gaps is None  # no events: its watermark waits
    rig.read(1, [2])
    final = rig.cp.freeze(final=True)
    assert final is not None and final.gaps is not None and final.gaps.end == {(TOPIC, 0): 2}


def test_discard_forgets_everything_uncommitted() -> None:
    rig = Rig()
    rig.read(0, [1, 2], gaps=True)
    rig.cp.discard()
    assert not rig.cp.read_end and rig.trades.rows == 0 and rig.cp.freeze() is None


def test_a_failed_group_offset_commit_is_only_logged() -> None:
    rig = Rig()

    def refuse(_: Any) -> None:
        raise RuntimeError("coordinator moved")

    rig.cp._commit_group_offsets = refuse
    rig.read(0, [1])
    frozen = rig.cp.freeze()
    assert frozen is not None
    frozen.commit()
    frozen.commit_group_offsets()  # advisory: lag monitoring only
    assert rig.trade_table.head == {(TOPIC, 0): 1}
