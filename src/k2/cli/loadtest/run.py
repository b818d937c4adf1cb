"""The load test: overload the pipeline on purpose, watch it degrade and recover, prove nothing was lost.

Three phases, one pipeline process (this one):

1. **Capacity.** A backlog of ``calibrate_ticks`` simulated ticks is ingested with resilience off;
   capacity is that count over the time from the first batch to the end of the run.
2. **Overload, then normal rate.** The overload is ``multiple`` × capacity × ``overload_s`` ticks
   (at most ``max_ticks``). Half of it is in Kafka before the pipeline starts, the burst a feed
   sends after an outage; a feed thread publishes the rest over ``overload_s`` (as fast as it can,
   if that is slower), then ``normal_fraction`` × capacity for ``normal_s``, while the pipeline runs
   with the configured thresholds. The head start makes the overload real even when the feeder
   cannot out-run the consumer (a Python publisher on a busy machine often cannot). The level goes
   up, low-priority symbols are deferred to the spill, and come back when the level is NORMAL again.
3. **Drain and proof.** Once the feed stopped, the level is NORMAL, no lag is left and every
   spilled tick was read back and committed, the pipeline stops and the tables are compared with
   the simulator's ground truth (``k2.feeds.verify``): every tick once, each deferral gap recovered.

The simulated feed has no faults of its own, so every gap in the gap table is one that deferral
opened, and each must have been recovered by the back-fill.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from k2.config import Settings
    from k2.feeds.verify import TruthReport
    from k2.pipeline.runner import Pipeline, PipelineStats

__all__ = ["LoadSample", "LoadTestResult", "run_load_test"]


@dataclass(frozen=True)
class LoadSample:
    """One observation of the running pipeline."""

    t: float  # seconds since the overload began
    phase: str
    level: str
    lag: int
    deferred: int
    backfilled: int
    written: int


@dataclass
class LoadTestResult:
    capacity: float
    target_rate: float
    sent: int
    samples: list[LoadSample] = field(default_factory=list)
    levels: list[str] = field(default_factory=list)  # distinct levels, in the order first seen
    peak_lag: int = 0
    drain_s: float | None = None
    deferred: int = 0
    backfilled: int = 0
    report: TruthReport | None = None

    @property
    def peak_level(self) -> str:
        from k2.resilience.levels import Level

        return max((Level[name] for name in self.levels), default=Level.NORMAL).name


def run_load_test(
    settings: Settings,
    *,
    multiple: float = 10.0,
    overload_s: float = 20.0,
    normal_s: float = 10.0,
    normal_fraction: float = 0.3,
    calibrate_ticks: int = 30_000,
    max_ticks: int = 400_000,
    symbols: int = 20,
    drain_timeout_s: float = 120.0,
    truth_file: Path | None = None,
    on_sample: Callable[[LoadSample], None] | None = None,
    seed: int = 5,
) -> LoadTestResult:
    """Run the three phases (module docstring) against ``settings``' Kafka, lake and state.

    Args:
        settings: use a scratch topic prefix and lake namespace: the test writes real tables.
        multiple: overload rate as a multiple of the measured capacity.
        max_ticks: bound on the ticks the overload phase publishes (the truth is kept in memory).
        on_sample: called with each sample (twice a second), e.g. to print the level over time.

    Raises:
        K2Error: the pipeline failed (the error that stopped it).
    """
    import json

    from k2.config import load_settings
    from k2.feeds.market import MarketConfig, symbol_names
    from k2.feeds.publish import FeedPublisher
    from k2.feeds.simulator import Simulator, SimulatorConfig
    from k2.feeds.verify import compare_with_truth
    from k2.pipeline.runner import Pipeline
    from k2.pipeline.sequencing import sequence_checks
    from k2.stream.admin import ensure_topics
    from k2.stream.producer import TickProducer

    market = MarketConfig(symbols=symbol_names(symbols, seed), chunk_ticks=2_000)
    sim = Simulator(SimulatorConfig(market, seed=seed))
    ticks = sim.deliveries()
    ensure_topics(settings.kafka)
    producer = TickProducer(settings.kafka)
    publisher = FeedPublisher(producer, settings.kafka)

    # 1. capacity: a backlog drained with resilience off
    sent = 0
    while sent < calibrate_ticks:
        sent += publisher.publish(next(ticks))
    producer.flush()
    calm = load_settings(**{**settings.model_dump(), "resilience": {"enabled": False}})
    first: list[float] = []

    def first_batch(_stats: PipelineStats) -> None:
        if not first:
            first.append(time.perf_counter())

    Pipeline(calm, checks=sequence_checks(calm)).run(max_messages=sent, max_seconds=120, on_batch=first_batch)
    capacity = sent / max(1e-3, time.perf_counter() - first[0]) if first else 1_000.0
    result = LoadTestResult(capacity=capacity, target_rate=capacity * multiple, sent=sent)

    # 2. overload, then normal rate, fed from a thread; the pipeline runs here (signal handlers)
    pipeline = Pipeline(settings, checks=sequence_checks(settings))
    feed_done = threading.Event()
    stop = threading.Event()
    burst = min(max_ticks, int(capacity * multiple * overload_s))
    budget = sent + burst  # bounds the overload only: the normal phase always runs
    while sent < budget - burst // 2:  # the head start
        sent += publisher.publish(next(ticks))
        producer.poll(0)
    producer.flush()

    def feed() -> None:
        nonlocal sent
        began = time.monotonic()
        phases = ((overload_s, capacity * multiple), (normal_s, capacity * normal_fraction))
        try:
            for seconds, rate in phases:
                start, count = time.monotonic(), 0
                while not stop.is_set() and time.monotonic() - start < seconds:
                    if rate > capacity and sent >= budget:
                        time.sleep(0.05)
                        continue
                    n = publisher.publish(next(ticks))
                    sent += n
                    count += n
                    producer.poll(0)
                    ahead = start + count / rate - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
            producer.flush()
        finally:
            result.drain_s = -(time.monotonic() - began)  # negative until the drain ends
            feed_done.set()

    def watch() -> None:
        began = time.monotonic()
        drain_from: float | None = None
        while not stop.is_set():
            time.sleep(0.5)
            status = pipeline.status()
            phase = "drain" if feed_done.is_set() else "feed"
            sample = LoadSample(
                t=round(time.monotonic() - began, 1),
                phase=phase,
                level=status["degradation"]["level"],
                lag=int(status["signals"]["lag"]),
                deferred=int(status["deferred"]),
                backfilled=int(status["backfilled"]),
                written=int(status["stats"]["written"]),
            )
            result.samples.append(sample)
            if sample.level not in result.levels:
                result.levels.append(sample.level)
            if on_sample is not None:
                on_sample(sample)
            if not feed_done.is_set():
                continue
            drain_from = drain_from or time.monotonic()
            if _drained(pipeline) or time.monotonic() - drain_from > drain_timeout_s:
                result.drain_s = round(time.monotonic() - drain_from, 1)
                pipeline.stop()
                return

    threads = [threading.Thread(target=feed, daemon=True), threading.Thread(target=watch, daemon=True)]
    for thread in threads:
        thread.start()
    try:
        pipeline.run(max_seconds=overload_s + normal_s + drain_timeout_s + 60)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        producer.close()
    result.peak_lag = pipeline.peak_lag
    result.deferred = int(pipeline.status()["deferred"])
    result.backfilled = pipeline.stats.backfilled

    # 3. the proof
    truth_path = truth_file or settings.data_dir / "loadtest-truth.json"
    sim.write_truth(truth_path)
    truth: dict[str, Any] = json.loads(truth_path.read_text())
    result.report = compare_with_truth(settings, truth, deferred=True)
    return result


def _drained(pipeline: Pipeline) -> bool:
    """NORMAL, no source lag, every spilled tick read back, nothing left uncommitted."""
    status = pipeline.status()
    read_back = sum(pipeline.stats.by_topic.get(t, 0) for t in pipeline.spill_topics)
    return (
        status["degradation"]["level"] == "NORMAL"
        and not status["stalled"]
        and status["signals"]["lag"] == 0
        and read_back >= status["deferred"]
        and pipeline.idle
    )
