"""The pipeline hook: checkpoint-long state, per-stage tokens, replay after a crash, dedup."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from k2.state.checks import BEGINNING, DedupOpener, StateChecks
from k2.state.dedup import Deduplicator
from k2.state.embedded import EmbeddedDedupStore, EmbeddedSequenceStore
from k2.state.errors import StateStoreError
from k2.state.synthetic import make_batch
from k2.state.tracker import SequenceTracker
from tests.unit.state.streams import D0, faulty_stream

TOPIC = "k2.trades"


def _opener(directory: Path) -> DedupOpener:
    def open_partition(partition: int) -> Deduplicator:
        dedup = Deduplicator("trades", EmbeddedDedupStore(directory, f"trades_p{partition}"), capacity=10_000)
        dedup.rebuild()
        return dedup

    return open_partition


def _checks(directory: Path, dedup: bool = False) -> StateChecks:
    dd = {TOPIC: _opener(directory)} if dedup else {}
    return StateChecks(EmbeddedSequenceStore(directory), reorder_window=8, dedup=dd)


def _end(frame: pl.DataFrame) -> dict[tuple[str, int], int]:
    ends = frame.group_by("_partition").agg(pl.col("_offset").max() + 1).rows()
    return {(TOPIC, int(p)): int(o) for p, o in ends}


def test_state_carries_across_batches_of_one_checkpoint_and_matches_the_tracker(tmp_path: Path) -> None:
    stream = make_batch("trades", faulty_stream(np.random.default_rng(8), keys=5), partitions=1)
    truth = SequenceTracker("trades", reorder_window=8).classify(stream, {})
    checks = _checks(tmp_path)
    assert checks.assign([(TOPIC, 0)]) == {(TOPIC, 0): BEGINNING}
    keeps, gaps = [], []
    for n, a in enumerate(range(0, stream.height, 150)):
        batch = stream.slice(a, 150)
        result = checks.process("trades", TOPIC, batch)
        keeps.append(result.keep)
        if result.gap_events is not None:
            gaps.append(result.gap_events)
        if n % 3 == 2:  # a checkpoint every third batch
            checks.prepare(_end(stream.slice(0, a + 150)))()
    assert pl.concat(keeps).to_list() == truth.keep().to_list()
    got = pl.concat(gaps)
    assert got.height == truth.gaps.height > 0
    assert got["first_missing"].to_list() == truth.gaps["first_missing"].to_list()
    assert {"kafka_partition", "kafka_offset"} <= set(got.columns) and got["event"].dtype == pl.String


def test_crash_before_the_state_commit_replays_from_the_state_token(tmp_path: Path) -> None:
    stream = make_batch("trades", faulty_stream(np.random.default_rng(9), keys=4), partitions=1)
    first, second, third = stream.slice(0, 300), stream.slice(300, 300), stream.slice(600)

    def run(crash: bool) -> list[bool]:
        directory = tmp_path / ("crash" if crash else "clean")
        checks = _checks(directory, dedup=True)
        checks.assign([(TOPIC, 0)])
        keep = checks.process("trades", TOPIC, first).keep.to_list()
        checks.prepare(_end(first))()
        keep += checks.process("trades", TOPIC, second).keep.to_list()
        if crash:  # tables committed `second`, the process died before checks.commit
            checks = _checks(directory, dedup=True)
            start = checks.assign([(TOPIC, 0)])[(TOPIC, 0)]
            assert start == 300
            replay = stream.filter(pl.col("_offset") >= start).slice(0, 300)
            checks.process("trades", TOPIC, replay)  # its rows go nowhere: the tables hold them
        checks.prepare(_end(second))()
        keep += checks.process("trades", TOPIC, third).keep.to_list()
        checks.prepare(_end(stream))()
        return keep

    assert run(crash=True) == run(crash=False)


def test_rows_below_a_stage_token_are_not_applied_twice(tmp_path: Path) -> None:
    rows = [("ASX", "BHP", D0, q) for q in range(1, 11)]
    stream = make_batch("trades", rows, partitions=1)
    checks = _checks(tmp_path)
    checks.assign([(TOPIC, 0)])
    checks.process("trades", TOPIC, stream.slice(0, 6))
    checks.prepare(_end(stream.slice(0, 6)))()
    again = _checks(tmp_path)
    assert again.assign([(TOPIC, 0)]) == {(TOPIC, 0): 6}
    # a pipeline re-reading from an older table watermark hands rows 0..9 in: 0..5 are skipped
    result = again.process("trades", TOPIC, stream)
    assert result.keep.all() and result.gap_events is not None and result.gap_events.is_empty()


def test_dedup_sees_ids_kept_earlier_in_the_same_checkpoint(tmp_path: Path) -> None:
    rows = [("SIM", "X", D0, q) for q in (1, 2, 3)]
    batch = make_batch("trades", rows, partitions=1)
    checks = _checks(tmp_path, dedup=True)
    checks.assign([(TOPIC, 0)])
    assert checks.process("trades", TOPIC, batch).keep.all()
    repeat = batch.with_columns(pl.col("_offset") + 3)
    assert not checks.process("trades", TOPIC, repeat).keep.any()
    checks.prepare({(TOPIC, 0): 6})()
    later = _checks(tmp_path, dedup=True)
    assert later.assign([(TOPIC, 0)]) == {(TOPIC, 0): 6}
    assert not later.process("trades", TOPIC, batch.with_columns(pl.col("_offset") + 6)).keep.any()


def test_revoke_drops_uncommitted_state(tmp_path: Path) -> None:
    rows = [("SIM", "X", D0, q) for q in (1, 2, 3)]
    batch = make_batch("trades", rows, partitions=1)
    checks = _checks(tmp_path)
    checks.assign([(TOPIC, 0)])
    checks.process("trades", TOPIC, batch)
    checks.revoke([(TOPIC, 0)])
    checks.assign([(TOPIC, 0)])
    assert checks.process("trades", TOPIC, batch).keep.all()  # not "duplicate": the state was dropped
    checks.prepare({(TOPIC, 0): 3})()
    assert checks.store.token(TOPIC, 0) == 3


def test_a_prepared_commit_may_run_later_on_another_thread(tmp_path: Path) -> None:
    stream = make_batch("trades", faulty_stream(np.random.default_rng(10), keys=4), partitions=1)
    pieces = [stream.slice(a, 200) for a in range(0, stream.height, 200)]
    truth = SequenceTracker("trades", reorder_window=8).classify(stream, {})
    checks = _checks(tmp_path, dedup=True)
    checks.assign([(TOPIC, 0)])
    keeps: list[bool] = []
    done = []
    with ThreadPoolExecutor(max_workers=1) as writer:  # commits run in order, behind the reader
        previous = None
        for n, piece in enumerate(pieces):
            keeps += checks.process("trades", TOPIC, piece).keep.to_list()  # before the last commit ran
            if previous is not None:
                done.append(writer.submit(previous))
            previous = checks.prepare(_end(stream.slice(0, 200 * (n + 1))))
        done.append(writer.submit(previous))
    for f in done:
        f.result()
    repeated_id = ~stream["message_id"].is_first_distinct()
    assert keeps == (truth.keep() & ~repeated_id).to_list()
    assert checks.store.token(TOPIC, 0) == stream.height


def test_dedup_sees_ids_of_a_prepared_checkpoint_until_and_after_its_commit(tmp_path: Path) -> None:
    rows = [("SIM", "X", D0, q) for q in range(1, 7)]
    batch = make_batch("trades", rows, partitions=1)
    checks = _checks(tmp_path, dedup=True)
    checks.assign([(TOPIC, 0)])
    assert checks.process("trades", TOPIC, batch.slice(0, 3)).keep.all()
    commit = checks.prepare({(TOPIC, 0): 3})  # frozen, not written yet
    again = batch.slice(0, 3).with_columns(pl.col("_offset") + 6)
    mixed = pl.concat([batch.slice(3, 3), again])  # new ids, then the frozen layer's
    assert checks.process("trades", TOPIC, mixed).keep.to_list() == [True] * 3 + [False] * 3
    assert not checks.process("trades", TOPIC, mixed.with_columns(pl.col("_offset") + 6)).keep.any()
    commit()  # the frozen ids leave the pending layers for the store, and stay duplicates
    assert not checks.process("trades", TOPIC, again.with_columns(pl.col("_offset") + 12)).keep.any()
    checks.revoke([(TOPIC, 0)])  # the current checkpoint's ids (3..5) were never committed
    checks.assign([(TOPIC, 0)])
    later = batch.with_columns(pl.col("_offset") + 3)
    assert checks.process("trades", TOPIC, later).keep.to_list() == [False] * 3 + [True] * 3


def test_a_partition_moving_between_processes_brings_the_ids_its_last_owner_committed(tmp_path: Path) -> None:
    """Two consumers share the store; dedup state is loaded per partition at assignment, so a
    filter in one process never answers for ids the other committed (a feed whose sequences lie:
    the same ids re-sent under new sequence numbers, which only dedup can catch)."""
    rows = [("SIM", "X", D0, q) for q in (1, 2, 3)]
    batch = make_batch("trades", rows, partitions=1)
    lying = make_batch("trades", [("SIM", "X", D0, q) for q in (4, 5, 6)], partitions=1).with_columns(
        batch["message_id"], pl.col("_offset") + 3
    )
    a, b = _checks(tmp_path, dedup=True), _checks(tmp_path, dedup=True)
    assert b.assign([(TOPIC, 0)]) == {(TOPIC, 0): BEGINNING}  # b owned it first: its filter is empty
    b.revoke([(TOPIC, 0)])
    a.assign([(TOPIC, 0)])
    assert a.process("trades", TOPIC, batch).keep.all()
    a.prepare({(TOPIC, 0): 3})()
    a.revoke([(TOPIC, 0)])
    assert b.assign([(TOPIC, 0)]) == {(TOPIC, 0): 3}
    assert not b.process("trades", TOPIC, lying).keep.any()  # a's ids, caught by b


def test_dedup_state_is_held_only_for_owned_partitions(tmp_path: Path) -> None:
    checks = _checks(tmp_path, dedup=True)
    checks.assign([(TOPIC, 0), (TOPIC, 1)])
    assert set(checks.owned) == {(TOPIC, 0), (TOPIC, 1)}
    assert checks.owned[(TOPIC, 0)] is not checks.owned[(TOPIC, 1)]
    checks.revoke([(TOPIC, 0)])
    assert set(checks.owned) == {(TOPIC, 1)}
    rows = make_batch("trades", [("SIM", "X", D0, 1)], partitions=1)
    with pytest.raises(StateStoreError, match="not assigned"):
        checks.process("trades", TOPIC, rows)  # partition 0: no state loaded, no verdict


def test_a_partition_quiet_for_the_timeout_is_named_once_and_its_marker_sweeps_it(tmp_path: Path) -> None:
    checks = StateChecks(EmbeddedSequenceStore(tmp_path), reorder_window=64, reorder_timeout=2.0)
    wall = [100.0]
    checks._clock = lambda: wall[0]
    checks.assign([(TOPIC, 0)])
    batch = make_batch("trades", [("ASX", "BHP", D0, 1), ("ASX", "BHP", D0, 3)], partitions=1)
    assert checks.process("trades", TOPIC, batch).gap_events.is_empty()  # type: ignore[union-attr]
    checks.prepare(_end(batch))()
    wall[0] = 101.0
    assert checks.quiet() == []  # not quiet long enough
    wall[0] = 102.5
    named = checks.quiet()
    assert [tp for tp, _ in named] == [(TOPIC, 0)]
    clock = named[0][1]
    assert clock == batch["exchange_ts"].dt.epoch("us").max()  # the partition's exchange clock
    assert checks.quiet() == []  # once per quiet spell
    checks.requiet((TOPIC, 0))  # the marker could not be sent
    assert checks.quiet() == [((TOPIC, 0), clock)]
    # the marker comes back at offset 2: the sweep has an offset, like a tick
    result = checks.process("trades", TOPIC, batch.clear(), markers=[(0, 2, clock)])
    assert result.gap_events is not None
    assert result.gap_events.select(
        "event", "first_missing", "last_missing", "kafka_partition", "kafka_offset"
    ).rows() == [("opened", 2, 2, 0, 2)]
    checks.prepare({(TOPIC, 0): 3})()  # the marker's offset moves the token
    wall[0] = 120.0
    assert checks.quiet() == []  # swept: no hole left to name
    again = StateChecks(EmbeddedSequenceStore(tmp_path), reorder_window=64, reorder_timeout=2.0)
    assert again.assign([(TOPIC, 0)]) == {(TOPIC, 0): 3}
    replay = again.process("trades", TOPIC, batch.clear(), markers=[(0, 2, clock)])  # below the token
    assert replay.gap_events is None  # already applied: swept once
    late = make_batch("trades", [("ASX", "BHP", D0, 2)], partitions=1, first_offsets={0: 3})
    result = again.process("trades", TOPIC, late)
    assert result.gap_events["event"].to_list() == ["recovered"]  # type: ignore[index]


def test_a_marker_behind_newer_ticks_sweeps_nothing_and_a_lost_one_is_named_again(tmp_path: Path) -> None:
    """A marker decided on a clock the partition has since passed (a backlog, a paused partition,
    a former owner) is stale: the holes are young on the exchange clock, so it sweeps nothing."""
    checks = StateChecks(EmbeddedSequenceStore(tmp_path), reorder_window=64, reorder_timeout=2.0)
    wall = [100.0]
    checks._clock = lambda: wall[0]
    checks.assign([(TOPIC, 0)])
    first = make_batch("trades", [("ASX", "BHP", D0, 1), ("ASX", "BHP", D0, 3)], partitions=1)
    checks.process("trades", TOPIC, first)
    wall[0] = 103.0
    ((_, clock),) = checks.quiet()
    later = make_batch("trades", [("ASX", "RIO", D0, 1)], partitions=1, first_offsets={0: 2}).with_columns(
        exchange_ts=first["exchange_ts"].max() + pl.duration(milliseconds=5)
    )
    stale = checks.process("trades", TOPIC, later, markers=[(0, 3, clock)])  # the tick came first
    assert stale.gap_events is None or stale.gap_events.is_empty()
    assert checks.process("trades", TOPIC, later.clear(), markers=[(0, 4, None)]).gap_events is None
    wall[0] = 104.0
    assert checks.quiet() == []  # RIO's tick started a new spell
    wall[0] = 106.5
    ((_, newer),) = checks.quiet()
    assert newer > clock
    wall[0] = 110.0
    assert checks.quiet() == []  # named 3.5 s ago: its marker may still be on the way
    wall[0] = 113.0
    assert checks.quiet() == [((TOPIC, 0), newer)]  # the holes stayed: its marker was lost


def test_a_store_error_while_naming_quiet_partitions_does_not_silence_them(tmp_path: Path) -> None:
    checks = StateChecks(EmbeddedSequenceStore(tmp_path), reorder_window=64, reorder_timeout=2.0)
    wall = [100.0]
    checks._clock = lambda: wall[0]
    checks.assign([(TOPIC, 0)])
    batch = make_batch("trades", [("ASX", "BHP", D0, 1), ("ASX", "BHP", D0, 3)], partitions=1)
    checks.process("trades", TOPIC, batch)
    checks.prepare(_end(batch))()
    wall[0] = 103.0
    real = checks.store.load_clocks

    def down(keys: object) -> object:
        raise StateStoreError("redis is down", backend="redis")

    checks.store.load_clocks = down  # type: ignore[method-assign]
    with pytest.raises(StateStoreError):
        checks.quiet()
    checks.store.load_clocks = real  # type: ignore[method-assign]
    assert [tp for tp, _ in checks.quiet()] == [(TOPIC, 0)]  # named once the store answers
    # a restart with nothing left to read: no batch says the topic's kind, the runner does
    again = StateChecks(EmbeddedSequenceStore(tmp_path), reorder_window=64, reorder_timeout=2.0)
    again._clock = lambda: wall[0]
    again.assign([(TOPIC, 0)])
    assert again.quiet() == []  # the spell starts now
    wall[0] = 106.0
    assert again.quiet() == []  # and the kind is unknown without a batch
    assert [tp for tp, _ in again.quiet({TOPIC: "trades"})] == [(TOPIC, 0)]


def test_a_marker_splits_its_partition_rows_so_verdicts_do_not_depend_on_batching(tmp_path: Path) -> None:
    """Ticks before a marker are classified before its sweep, the ones after it after."""
    rows = [("ASX", "BHP", D0, 1), ("ASX", "BHP", D0, 3), ("ASX", "BHP", D0, 2)]
    batch = make_batch("trades", rows, partitions=1)
    clock = batch["exchange_ts"].head(2).dt.epoch("us").max()  # the clock after offsets 0 and 1
    # offsets 0, 1, then the marker at 2, then the late sequence 2 at offset 3: swept, then filled
    marked = batch.with_columns(pl.Series("_offset", [0, 1, 3], dtype=pl.Int64))
    whole = StateChecks(EmbeddedSequenceStore(tmp_path / "a"), reorder_window=64, reorder_timeout=2.0)
    whole.assign([(TOPIC, 0)])
    one = whole.process("trades", TOPIC, marked, markers=[(0, 2, clock)])
    assert one.gap_events is not None
    assert one.gap_events.select("event", "kafka_offset").rows() == [("opened", 2), ("recovered", 3)]
    assert one.keep.to_list() == [True, True, True]
    cut = StateChecks(EmbeddedSequenceStore(tmp_path / "b"), reorder_window=64, reorder_timeout=2.0)
    cut.assign([(TOPIC, 0)])
    first = cut.process("trades", TOPIC, marked.head(2))
    second = cut.process("trades", TOPIC, marked.tail(1), markers=[(0, 2, clock)])
    events = [e for e in (first.gap_events, second.gap_events) if e is not None and e.height]
    assert pl.concat(events).select("event", "kafka_offset").rows() == [("opened", 2), ("recovered", 3)]


def test_quiet_after_only_empty_batches_does_not_fail(tmp_path: Path) -> None:
    checks = StateChecks(EmbeddedSequenceStore(tmp_path), reorder_window=64, reorder_timeout=2.0)
    wall = [100.0]
    checks._clock = lambda: wall[0]
    checks.assign([(TOPIC, 0)])
    empty = make_batch("trades", [("ASX", "BHP", D0, 1)], partitions=1).clear()
    checks.process("trades", TOPIC, empty)
    assert checks.quiet() == []  # the quiet spell starts
    wall[0] = 110.0
    assert checks.quiet() == []  # no young hole: nothing to sweep
    swept = checks.process("trades", TOPIC, empty, markers=[(0, 5, 0)])
    assert swept.keep.len() == 0 and swept.gap_events is None


def test_states_are_read_newest_layer_first_then_the_store(tmp_path: Path) -> None:
    """``_states`` takes each key from the newest layer holding it: this checkpoint's states, then
    the prepared (frozen) ones not written yet, newest first, then the store."""
    from k2.state.base import PartitionToken
    from k2.state.model import KeyState

    checks = _checks(tmp_path)
    k = [("trades", "ASX", f"K{i}") for i in range(5)]
    checks.store.commit({k[0]: KeyState(1, 1), k[1]: KeyState(1, 1), k[2]: KeyState(1, 1)},
                       [PartitionToken(TOPIC, 0, None, 1)])  # fmt: skip
    checks.prepare({})  # frozen, oldest
    checks._frozen[-1].states.update({k[1]: KeyState(1, 2), k[2]: KeyState(1, 2)})
    checks._pending = {}
    checks.prepare({})
    checks._frozen[-1].states.update({k[2]: KeyState(1, 3), k[3]: KeyState(1, 3)})
    checks._pending = {k[3]: KeyState(1, 4)}
    assert checks._states(k) == {
        k[0]: KeyState(1, 1),  # the store
        k[1]: KeyState(1, 2),  # the older frozen layer
        k[2]: KeyState(1, 3),  # the newer frozen layer over the older one
        k[3]: KeyState(1, 4),  # this checkpoint's over both
    }  # k[4]: nowhere, absent
