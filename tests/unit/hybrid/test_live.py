from __future__ import annotations

import time

import polars as pl

from k2.hybrid import HybridEngine
from k2.hybrid.live import LiveEvent, LiveSubscription, Wait
from tests.unit.hybrid.conftest import Stream, ticks


def bhp(first: int, count: int, *, step: float = 10.0) -> pl.DataFrame:
    seqs = list(range(first, first + count))
    return ticks("trades", ["BHP"] * count, seqs, seconds=[(s - 1) * step for s in seqs])


def test_new_ticks_once_each_and_whole_bars(stream: Stream, hybrid: HybridEngine) -> None:
    committed = stream.produce("trades", bhp(1, 9)).drop("kafka_partition", "kafka_offset", "_topic")
    stream.commit("trades")
    before = stream.produce("trades", bhp(10, 2)).drop("kafka_partition", "kafka_offset", "_topic")
    sub = LiveSubscription(hybrid, ("trades",), ("BHP",))
    hello = sub.start()
    assert hello.kind == "status" and hello.status["views"][0]["snapshot_id"] is not None
    assert sub.poll() == []  # nothing new since the start

    stream.produce("trades", bhp(12, 3))  # new ticks at 110, 120, 130 s
    stream.produce("trades", committed.slice(8, 1))  # a re-send of a committed tick
    stream.produce("trades", before.slice(0, 1))  # a re-send of a tick from before the start
    hybrid.cache.pump()
    events = sub.poll()
    kinds = [e.kind for e in events]
    assert kinds == ["trade", "bar"]
    assert events[0].rows is not None and events[0].rows["sequence"].to_list() == [12, 13, 14]
    bars = events[1].rows
    assert bars is not None
    # the 2nd minute holds ticks at 60..110 s: 6 trades, of which 110 s is uncommitted (no. 12) and
    # 90 s, 100 s (nos. 10, 11) came before the start, uncommitted too; the 3rd minute: 120 and 130 s
    assert bars["trades"].to_list() == [6, 2] and bars["uncommitted"].to_list() == [3, 2]

    stream.produce("trades", bhp(15, 1))  # 140 s: folds into the 3rd minute's bar
    stream.produce("trades", bhp(13, 1))  # and a re-send of one this subscription already showed
    hybrid.cache.pump()
    events = sub.poll()
    assert events[0].rows is not None and events[0].rows["sequence"].to_list() == [15]
    assert events[1].rows is not None and events[1].rows["trades"].to_list() == [3]
    assert sub.emitted == 4


def test_stream_runs_for_a_duration(stream: Stream, hybrid: HybridEngine) -> None:
    stream.produce("trades", bhp(1, 2))
    sub = LiveSubscription(hybrid, ("trades", "quotes"), ("BHP",), bars=False)
    events = list(sub.stream(duration_s=0.05, interval_s=0.01))
    assert events[0].kind == "status" and {v["kind"] for v in events[0].status["views"]} == {
        "trades",
        "quotes",
    }
    assert all(e.kind == "status" for e in events)


def test_steps_wait_between_polls_mark_keep_alives_and_close_when_idle(
    stream: Stream, hybrid: HybridEngine
) -> None:
    sub = LiveSubscription(hybrid, ("trades",), ("BHP",), bars=False)
    steps = sub.steps(interval_s=0.01, idle_s=0.2, idle_reason="api.stream_idle_s", heartbeat_s=0.05)
    assert isinstance(hello := next(steps), LiveEvent) and hello.kind == "status"
    stream.produce("trades", bhp(1, 2))
    hybrid.cache.pump()
    seen: list[LiveEvent | Wait] = []
    for step in steps:  # ends by itself once idle: no event for 0.2 s
        seen.append(step)
        if isinstance(step, Wait):
            time.sleep(step.seconds)
    events = [s for s in seen if isinstance(s, LiveEvent)]
    assert events[0].kind == "trade" and events[0].rows is not None and events[0].rows.height == 2
    assert events[-1].status == {"closed": "api.stream_idle_s"}
    waits = [s for s in seen if isinstance(s, Wait)]
    assert {w.seconds for w in waits} == {0.01} and any(w.keep_alive for w in waits)
    assert not waits[0].keep_alive  # right after an event
