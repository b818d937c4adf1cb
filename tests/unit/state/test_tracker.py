"""Sequence classification: every verdict, the gap life cycle, and batch-boundary independence."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest

from k2.state.errors import InvalidBatchError
from k2.state.model import VERDICT, KeyState
from k2.state.synthetic import SyntheticFeed
from k2.state.tracker import SequenceTracker
from tests.unit.state.streams import (
    D0,
    T0,
    event_tuples,
    faulty_stream,
    reference_run,
    stream_batch,
    tracker_run,
)

D1 = D0 + timedelta(days=1)


def classify(seqs: list[int | tuple[date, int]], window: int = 2, states: dict | None = None, kept: int = 10):  # type: ignore[no-untyped-def]
    rows = [("ASX", "BHP", *(s if isinstance(s, tuple) else (D0, s))) for s in seqs]
    batch = stream_batch(rows)
    tracker = SequenceTracker("trades", reorder_window=window, sessions_kept=kept)
    result = tracker.classify(batch, states or {})
    return result.verdicts.cast(pl.String).to_list(), event_tuples(result.gaps), result


def test_in_order_stream_is_all_in_order_and_raises_the_mark() -> None:
    verdicts, events, result = classify([1, 2, 3, 4])
    assert verdicts == ["in_order"] * 4 and events == []
    assert result.states[("trades", "ASX", "BHP")] == KeyState((D0 - date(1970, 1, 1)).days, 4)
    assert result.verdicts.dtype == VERDICT


def test_gap_opens_a_hole_that_becomes_a_recorded_gap_past_the_window() -> None:
    verdicts, events, _ = classify([1, 2, 5, 6, 7, 8, 9])
    assert verdicts == ["in_order", "in_order", "gap", "in_order", "in_order", "in_order", "in_order"]
    # hole [3, 4]: recorded when the mark passes 4 + window(2), i.e. at sequence 7 (row 4)
    assert events == [("opened", "ASX", "BHP", D0, 3, 4, T0 + 4000, None, None)]


def test_young_hole_fill_is_out_of_order_and_never_becomes_a_gap() -> None:
    verdicts, events, result = classify([1, 3, 2, 4, 5, 6, 7, 8])
    assert verdicts[:3] == ["in_order", "gap", "out_of_order"]
    assert set(verdicts[3:]) == {"in_order"} and events == []
    assert result.states[("trades", "ASX", "BHP")].ranges == ()


def test_late_fill_splits_a_gap_and_the_last_fill_recovers_it() -> None:
    verdicts, events, result = classify([1, 5, 6, 7, 8, 3, 2, 4, 4])
    assert verdicts == [
        "in_order", "gap", "in_order", "in_order", "in_order", "late_fill", "late_fill", "late_fill",
        "duplicate",
    ]  # fmt: skip
    # 7 - 4 > 2: gap [2, 4] recorded at row 3; 3 splits it, 2 then 4 complete it
    opened = ("opened", "ASX", "BHP", D0, 2, 4, T0 + 3000, None, None)
    mid = stream_batch([("ASX", "BHP", D0, 4)])["message_id"][0]
    recovered = ("recovered", "ASX", "BHP", D0, 2, 4, T0 + 3000, T0 + 7000, mid)
    assert events == [opened, recovered]
    assert result.gaps["size"].to_list() == [3, 3]
    assert result.states[("trades", "ASX", "BHP")].ranges == ()


def test_duplicate_and_restart_at_one_within_a_session() -> None:
    verdicts, events, _ = classify([1, 2, 3, 2, 1, 4])
    assert verdicts == ["in_order", "in_order", "in_order", "duplicate", "duplicate", "in_order"]
    assert events == []


def test_session_reset_records_open_holes_of_the_closing_session() -> None:
    verdicts, events, result = classify([1, 3, (D1, 1), (D1, 2)], window=64)
    assert verdicts == ["in_order", "gap", "session_reset", "in_order"]
    assert events == [("opened", "ASX", "BHP", D0, 2, 2, T0 + 2000, None, None)]
    st = result.states[("trades", "ASX", "BHP")]
    assert (st.hwm, st.prev_hwm, st.prev_session) == (2, 3, (D0 - date(1970, 1, 1)).days)


def test_late_tick_of_the_previous_session_fills_its_gap_or_is_late() -> None:
    seqs: list[int | tuple[date, int]] = [1, 3, (D1, 1), 2, 3, 5, (D0 - timedelta(days=1), 9)]
    verdicts, events, _ = classify(seqs, window=64, kept=1)
    assert verdicts == ["in_order", "gap", "session_reset", "late_fill", "duplicate", "late_session",
                        "late_session"]  # fmt: skip
    kinds = [(e[0], e[4], e[5]) for e in events]
    # gap [2,2] opened at the reset and recovered by the late 2; 5 beyond the closed session's
    # mark records [4, 4] at once; with one session kept, the day before is not kept at all
    assert kinds == [("opened", 2, 2), ("recovered", 2, 2), ("opened", 4, 4)]
    # with room for it, an unseen older session is kept from its first tick: [1, 8] is recorded
    verdicts, events, result = classify(seqs, window=64, kept=2)
    assert verdicts[-1] == "late_session"
    assert [(e[0], e[4], e[5]) for e in events][-1] == ("opened", 1, 8)
    assert [s for s, _, _ in result.states[("trades", "ASX", "BHP")].older] == [
        (D0 - timedelta(days=1) - date(1970, 1, 1)).days
    ]


def test_a_session_re_sent_days_later_is_all_duplicates_while_it_is_kept() -> None:
    days = [D0 + timedelta(days=d) for d in range(5)]
    first = [(d, q) for d in days for q in range(1, 4)]
    again = [(d, q) for d in days for q in range(1, 4)]
    verdicts, _, result = classify([*first, *again], kept=5)
    assert verdicts[len(first) :] == ["duplicate"] * len(again)
    assert len(result.states[("trades", "ASX", "BHP")].older) == 3  # previous + 3 older = 4 closed
    # with fewer sessions kept, the oldest days are forgotten and their re-sent ticks pass as late
    verdicts, _, _ = classify([*first, *again], kept=2)
    assert verdicts[len(first) : len(first) + 3] == ["late_session"] * 3


def test_sessions_kept_is_bounded_and_the_oldest_go_first() -> None:
    days = [D0 + timedelta(days=d) for d in range(8)]
    _, _, result = classify([(d, 1) for d in days], kept=3)
    st = result.states[("trades", "ASX", "BHP")]
    epoch = date(1970, 1, 1)
    assert st.session == (days[-1] - epoch).days
    assert [st.prev_session, *(s for s, _, _ in st.older)] == [(d - epoch).days for d in days[-2:-5:-1]]


def test_new_session_that_does_not_start_at_one_opens_a_hole() -> None:
    verdicts, events, result = classify([1, (D1, 4), (D1, 5), (D1, 1)], window=64)
    assert verdicts == ["in_order", "session_reset", "in_order", "out_of_order"]
    assert result.states[("trades", "ASX", "BHP")].ranges == ((2, 3, 0, 0, 0),)
    assert events == []


def test_first_tick_of_an_unknown_key_past_one_is_a_gap() -> None:
    verdicts, _, result = classify([5, 6])
    assert verdicts == ["gap", "in_order"]
    assert result.states[("trades", "ASX", "BHP")].ranges == ((1, 4, 0, 0, 0),)


def test_zero_window_records_every_hole_at_once() -> None:
    verdicts, events, _ = classify([1, 4, 2], window=0)
    assert verdicts == ["in_order", "gap", "late_fill"]
    assert [e[0] for e in events] == ["opened"]


def test_out_of_order_fill_can_leave_a_stale_piece_that_is_recorded_at_once() -> None:
    # window 3: hole [2, 9] is young at mark 11 (11 - 9 <= 3); 8 splits it into [2, 7] and [9, 9],
    # and [2, 7] is 4 behind the mark: recorded by the very tick that split it.
    verdicts, events, _ = classify([1, 10, 11, 8], window=3)
    assert verdicts == ["in_order", "gap", "in_order", "out_of_order"]
    assert events == [("opened", "ASX", "BHP", D0, 2, 7, T0 + 3000, None, None)]


def test_state_carried_across_calls_gives_the_same_as_one_call() -> None:
    seqs = [1, 2, 6, 3, 9, 10, 11, 12, 4, 5, 7, 8, 12]
    whole_v, whole_e, whole = classify(seqs)
    rows = [("ASX", "BHP", D0, s) for s in seqs]
    tracker = SequenceTracker("trades", reorder_window=2)
    v, e, states = tracker_run(tracker, stream_batch(rows), cuts=[2, 3, 9])
    assert (v, e) == (whole_v, whole_e)
    assert states == whole.states


def test_rejects_a_batch_without_valid_sequences() -> None:
    batch = stream_batch([("ASX", "BHP", D0, 1)])
    tracker = SequenceTracker("trades")
    with pytest.raises(InvalidBatchError) as info:
        tracker.classify(batch.with_columns(sequence=pl.lit(0, pl.Int64)), {})
    assert info.value.column == "sequence"
    with pytest.raises(InvalidBatchError):
        tracker.classify(batch.drop("exchange_ts"), {})


def test_empty_batch() -> None:
    result = SequenceTracker("trades").classify(stream_batch([("A", "B", D0, 1)]).clear(), {})
    assert result.verdicts.len() == 0 and result.gaps.is_empty() and result.states == {}


def test_keep_drops_only_duplicates() -> None:
    _, _, result = classify([1, 1, 3, 2])
    assert result.keep().to_list() == [True, False, True, True]


@pytest.mark.parametrize("seed", range(12))
def test_matches_the_reference_whatever_the_batch_boundaries(seed: int) -> None:
    rng = np.random.default_rng(seed)
    window = int(rng.choice([0, 1, 4, 16, 64]))
    kept = int(rng.choice([1, 2, 10]))  # closed sessions kept: re-sent old sessions need room
    # every other seed adds the time bound, on an exchange clock that jitters (late ticks arrive
    # with older times), over 1 to 4 partitions
    timeout = None if seed % 2 else int(rng.choice([1, 3, 20, 150])) * 1000
    rows = faulty_stream(rng, sessions=4, p_resend=0.5, keys=6)
    ts = None
    if timeout is not None:
        ts = (T0 + 1000 * np.arange(len(rows)) + rng.integers(-4000, 4000, len(rows))).tolist()
    batch = stream_batch(rows, ts)
    if timeout is not None:
        nparts = int(rng.integers(1, 5))
        batch = batch.with_columns(
            (pl.col("symbol").str.slice(1).cast(pl.Int32) % nparts).alias("_partition")
        )
    want_v, want_e = reference_run(rows, window, batch, kept, timeout)
    assert len(set(want_v)) >= 5, "the stream should exercise most verdicts"
    tracker = SequenceTracker(
        "trades", reorder_window=window, sessions_kept=kept,
        reorder_timeout=None if timeout is None else timeout / 1e6,
    )  # fmt: skip
    runs = [
        [],  # one batch
        sorted(rng.choice(batch.height, size=20, replace=False).tolist()),
        sorted(rng.choice(batch.height, size=200, replace=False).tolist()),
    ]
    if seed < 3:
        runs.append(list(range(1, batch.height)))  # one tick per batch (slow: a few seeds only)
    final_states = []
    for cuts in runs:
        verdicts, events, states = tracker_run(tracker, batch, cuts)
        assert verdicts == want_v
        assert events == want_e
        final_states.append(states)
    assert all(s == final_states[0] for s in final_states)


def test_synthetic_feed_mostly_takes_the_fast_path() -> None:
    feed = SyntheticFeed(symbols=200, fault_rate=0.001, seed=3)
    tracker = SequenceTracker("trades")
    states: dict = {}
    counts: dict[str, int] = {}
    for _ in range(5):
        result = tracker.classify(feed.next_batch(5000), states)
        states.update(result.states)
        for v, c in result.verdicts.value_counts().iter_rows():
            counts[v] = counts.get(v, 0) + c
    assert counts["in_order"] > 0.98 * 25_000
    assert counts.get("gap", 0) > 0 and counts.get("duplicate", 0) > 0


def test_observe_counts_verdicts_gaps_and_recoveries() -> None:
    from k2.observability.metrics import sample

    tracker = SequenceTracker("quotes", reorder_window=1)
    rows = [("SIM", "OBS", D0, s) for s in (1, 4, 5, 6, 2, 3)]
    result = tracker.classify(stream_batch(rows), {})
    base = {
        v: sample("k2_sequence_verdicts_total", {"kind": "quotes", "verdict": v})
        for v in ("in_order", "gap", "late_fill")
    }
    ticks = sample("k2_gap_ticks_total", {"kind": "quotes"})
    recovered = sample("k2_gap_recoveries_total", {"kind": "quotes"})
    tracker.observe(result)
    assert (
        sample("k2_sequence_verdicts_total", {"kind": "quotes", "verdict": "in_order"}) - base["in_order"]
        == 3
    )
    assert (
        sample("k2_sequence_verdicts_total", {"kind": "quotes", "verdict": "late_fill"}) - base["late_fill"]
        == 2
    )
    assert sample("k2_gap_ticks_total", {"kind": "quotes"}) - ticks == 2
    assert sample("k2_gap_recoveries_total", {"kind": "quotes"}) - recovered == 1
    assert sample("k2_gaps_open", {"kind": "quotes"}) == 0
    tracker.observe(tracker.classify(stream_batch([("SIM", "OBS2", D0, s) for s in (1, 9, 10)]), {}))
    assert sample("k2_gaps_open", {"kind": "quotes"}) == 1


def test_a_quiet_symbols_hole_is_recorded_once_its_partition_clock_passes_the_timeout() -> None:
    # BHP opens hole [2, 2] at clock T0 + 1 ms and never trades again; CBA, on the same partition,
    # moves the clock on: the hole is recorded by the CBA tick that reaches T0 + 1 ms + 10 ms
    rows = [("ASX", "BHP", D0, 1), ("ASX", "BHP", D0, 3)] + [("ASX", "CBA", D0, q) for q in range(1, 30)]
    batch = stream_batch(rows).with_columns(pl.lit(0, pl.Int32).alias("_partition"))
    tracker = SequenceTracker("trades", reorder_window=64, reorder_timeout=0.010)
    opened = ("opened", "ASX", "BHP", D0, 2, 2, T0 + 11_000, None, None)
    for cuts in ([], [2], [5, 12, 13], list(range(1, batch.height))):
        verdicts, events, states = tracker_run(tracker, batch, cuts)
        assert events == [opened], cuts
        assert states[("trades", "ASX", "BHP")].ranges == ((2, 2, 2, 2, T0 + 11_000),)
    # a late fill still recovers it, however late; before the timeout it is merely out of order
    late = stream_batch([*rows, ("ASX", "BHP", D0, 2)]).with_columns(pl.lit(0, pl.Int32).alias("_partition"))
    verdicts, events, _ = tracker_run(tracker, late, [7])
    assert verdicts[-1] == "late_fill" and [e[0] for e in events] == ["opened", "recovered"]
    early = stream_batch([*rows[:5], ("ASX", "BHP", D0, 2)]).with_columns(
        pl.lit(0, pl.Int32).alias("_partition")
    )
    verdicts, events, _ = tracker_run(tracker, early, [])
    assert verdicts[-1] == "out_of_order" and events == []


def test_the_time_bound_is_per_partition() -> None:
    rows = [("ASX", "BHP", D0, 1), ("ASX", "BHP", D0, 3)] + [("ASX", "CBA", D0, q) for q in range(1, 30)]
    batch = stream_batch(rows).with_columns(
        pl.when(pl.col("symbol") == "BHP").then(1).otherwise(0).cast(pl.Int32).alias("_partition")
    )
    tracker = SequenceTracker("trades", reorder_window=64, reorder_timeout=0.010)
    clocks: dict = {}
    _, events, _states = tracker_run(tracker, batch, [3], clocks=clocks)
    assert events == []  # BHP's partition saw no tick since: its clock stands still
    assert clocks[("trades", 1)].holes == (("ASX", "BHP", T0 + 1000),)
    assert clocks[("trades", 0)].holes == ()


def test_expire_records_the_holes_of_a_stopped_partition_at_opening_plus_timeout() -> None:
    rows = [("ASX", "BHP", D0, 1), ("ASX", "BHP", D0, 3), ("ASX", "CBA", D0, 1), ("ASX", "CBA", D0, 5)]
    batch = stream_batch(rows).with_columns(pl.lit(2, pl.Int32).alias("_partition"))
    tracker = SequenceTracker("trades", reorder_window=64, reorder_timeout=0.5)
    clocks: dict = {}
    _, events, states = tracker_run(tracker, batch, [], clocks=clocks)
    assert events == [] and len(clocks[("trades", 2)].holes) == 2
    result = tracker.expire(clocks, states)
    assert event_tuples(result.gaps) == [
        ("opened", "ASX", "BHP", D0, 2, 2, T0 + 1000 + 500_000, None, None),
        ("opened", "ASX", "CBA", D0, 2, 4, T0 + 3000 + 500_000, None, None),
    ]
    assert result.gaps["_partition"].to_list() == [2, 2] and result.gaps["_offset"].null_count() == 2
    assert result.clocks[("trades", 2)].holes == () and result.clocks[("trades", 2)].now == T0 + 3000
    assert all(r[2] for st in result.states.values() for r in st.ranges)


def test_observe_reports_pending_holes_and_the_time_from_hole_to_gap() -> None:
    from k2.observability.metrics import REGISTRY, sample

    rows = [("SIM", "PEND", D0, 1), ("SIM", "PEND", D0, 3)] + [("SIM", "MOVE", D0, q) for q in range(1, 30)]
    batch = stream_batch(rows).with_columns(pl.lit(0, pl.Int32).alias("_partition"))
    tracker = SequenceTracker("quotes", reorder_window=64, reorder_timeout=0.010)
    count = REGISTRY.get_sample_value("k2_gap_detection_seconds_count", {"kind": "quotes"}) or 0.0
    first = tracker.classify(batch.slice(0, 5), {})
    tracker.observe(first)
    assert sample("k2_gap_holes_open", {"kind": "quotes"}) == 1
    assert sample("k2_gap_oldest_pending_seconds", {"kind": "quotes"}) == 0.003
    second = tracker.classify(batch.slice(5), first.states, first.clocks)
    tracker.observe(second)
    assert second.detection_s == (0.010,)
    assert sample("k2_gap_holes_open", {"kind": "quotes"}) == 0
    assert REGISTRY.get_sample_value("k2_gap_detection_seconds_count", {"kind": "quotes"}) == count + 1


@pytest.mark.parametrize("seed", [2, 3, 5])
def test_open_gaps_gauge_equals_the_count_over_every_state(seed: int) -> None:
    """observe() only looks at keys with ranges or with gaps open before (not every key a batch
    touched): the gauge must still equal the open gaps summed over every key's latest state, as
    gaps open, late fills recover them (a key's ranges then empty) and sessions change."""
    from k2.observability.metrics import sample

    kind = f"gauge{seed}"  # a label of its own: other tests' trackers share the registry
    tracker = SequenceTracker(kind, reorder_window=2)
    rows = faulty_stream(np.random.default_rng(seed), keys=12, sessions=3, p_drop=0.08, p_late=0.7)
    states: dict = {}
    highest = cleared = 0
    for a in range(0, len(rows), 37):
        result = tracker.classify(stream_batch(rows[a : a + 37]), states)
        before = {k: states[k].open_gaps() for k in result.states if k in states}
        states.update(result.states)
        tracker.observe(result)
        cleared += sum(1 for k, n in before.items() if n and not any(states[k][2:3] + states[k][5:7]))
        expected = sum(st.open_gaps() for st in states.values())
        highest = max(highest, expected)
        assert sample("k2_gaps_open", {"kind": kind}) == expected
    assert highest > 0 and cleared > 0  # gaps opened, and some key's last open gap recovered to no ranges
