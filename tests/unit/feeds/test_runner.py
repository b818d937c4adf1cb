"""The send loops: a stop never cuts a simulator batch, so the truth matches what was sent."""

from __future__ import annotations

import threading
from pathlib import Path

from k2.config import KafkaSettings
from k2.feeds.asx import read_asx
from k2.feeds.market import MarketConfig
from k2.feeds.publish import FeedCounts, FeedPublisher
from k2.feeds.runner import run_replay, run_simulation
from k2.feeds.simulator import Simulator, SimulatorConfig
from tests.unit.feeds.conftest import FAULTS
from tests.unit.feeds.test_publish import FakeSink


def _sim(chunk: int = 1_000) -> Simulator:
    return Simulator(SimulatorConfig(MarketConfig(symbols=("AAA", "BBB"), chunk_ticks=chunk), FAULTS, seed=5))


def _sent(sink: FakeSink, kind: str) -> int:
    return len(sink.topics.get(f"k2.{kind}", []))


def test_count_run_sends_exactly_the_truth() -> None:
    sim, sink = _sim(), FakeSink()
    report = run_simulation(sim, FeedPublisher(sink, KafkaSettings()), count=5_000)
    truth = sim.truth.to_dict()["kinds"]
    assert truth["trades"]["generated"] + truth["quotes"]["generated"] == 5_000
    for kind in ("trades", "quotes"):
        assert _sent(sink, kind) == truth[kind]["messages"]
    assert report.messages == truth["trades"]["messages"] + truth["quotes"]["messages"] and not report.stopped


def test_a_stop_finishes_the_batch_in_hand() -> None:
    sim, sink = _sim(), FakeSink()
    stop = threading.Event()

    def progress(counts: FeedCounts, elapsed: float) -> None:
        stop.set()  # as if Ctrl-C came during the first slice

    report = run_simulation(
        sim, FeedPublisher(sink, KafkaSettings()), rate=20_000, stop=stop, on_progress=progress
    )
    truth = sim.truth.to_dict()["kinds"]
    first_batch = len(next(_sim().deliveries()))
    assert report.stopped and report.messages == first_batch > 1_000 // 2  # one batch, sent whole
    assert len(sink.frames) > 2  # ... although the stop came during its first slice
    for kind in ("trades", "quotes"):
        assert _sent(sink, kind) == truth[kind]["messages"]


def test_rate_paces_the_wall_clock() -> None:
    clock = [0.0]
    sim, sink = _sim(chunk=200), FakeSink()
    waits: list[float] = []

    class Stop(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            waits.append(timeout or 0.0)
            clock[0] += timeout or 0.0
            return False

    report = run_simulation(
        sim, FeedPublisher(sink, KafkaSettings()), count=1_000, rate=500, stop=Stop(), clock=lambda: clock[0]
    )
    assert report.messages >= 1_000 and 1.8 <= report.elapsed_s <= 2.2  # ~1 000 messages at 500/s
    assert max(waits) <= 0.06


def test_replay_sends_dead_letters_then_ticks(asx_data: Path) -> None:
    replay = read_asx(asx_data, symbols={"MWR"})
    sink = FakeSink()
    report = run_replay(replay, FeedPublisher(sink, KafkaSettings()))
    assert _sent(sink, "trades") == 11 and _sent(sink, "quotes") == 60 and report.messages == 71
