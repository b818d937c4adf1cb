"""Chapter 7, backpressure: a 10x burst degrades, defers and back-fills; a breaker opens and closes.

The burst is half in Kafka before ingest starts (``k2 load-test``'s head start), so the overload
happens on any machine; the lag thresholds are set for a demo-sized burst and printed. The breaker
is the state store's: the chapter runs a redis-server of its own and stops it for a few seconds.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from k2.cli.demo.stage import Stage

__all__ = ["backpressure"]

#: Lag (messages) at which each level starts and ends, sized for a burst of tens of thousands.
DEMO_LAG = {
    "soft": {"up": 1_000, "down": 500},
    "graceful": {"up": 3_000, "down": 1_500},
    "aggressive": {"up": 60_000, "down": 30_000},
}


def backpressure(stage: Stage) -> None:
    _burst(stage)
    _breaker(stage)


def _burst(stage: Stage) -> None:
    from k2.cli.loadtest.run import LoadSample, run_load_test

    settings, _ = stage.scratch(
        "burst",
        pipeline={"batch_max_messages": 2_000},
        resilience={"cooldown_s": 1.0, "lag": DEMO_LAG},
    )
    stage.say(
        "lag thresholds for this burst: " + ", ".join(f"{k} at {v['up']:,}" for k, v in DEMO_LAG.items())
    )
    last: list[str] = []

    def show(sample: LoadSample) -> None:
        if not last or last[0] != sample.level:
            stage.say(f"{sample.t:5.1f}s {sample.phase:5} level {sample.level:10} lag {sample.lag:>7,} "
                      f"deferred {sample.deferred:>7,} back-filled {sample.backfilled:>7,}")  # fmt: skip
            last[:] = [sample.level]

    fast = stage.fast
    result = run_load_test(
        settings, multiple=10, overload_s=6 if fast else 15, normal_s=3 if fast else 10,
        calibrate_ticks=10_000 if fast else 30_000, max_ticks=50_000 if fast else 200_000,
        drain_timeout_s=60, truth_file=stage.workdir / "burst-truth.json", on_sample=show,
    )  # fmt: skip
    stage.say(f"capacity {result.capacity:,.0f} ticks/s measured, burst at {result.target_rate:,.0f}/s; "
              f"levels seen {', '.join(result.levels)}, the last {result.samples[-1].level}; peak lag {result.peak_lag:,}")  # fmt: skip
    stage.say(f"deferred {result.deferred:,} ticks to the spill topic, back-filled {result.backfilled:,}; "
              f"drained in {result.drain_s}s")  # fmt: skip
    report = result.report
    stage.check("the level stepped up under the burst and came back to NORMAL",
                result.peak_level in ("GRACEFUL", "AGGRESSIVE") and result.samples[-1].level == "NORMAL",
                " -> ".join(result.levels))  # fmt: skip
    stage.check("deferred ticks were all back-filled", 0 < result.deferred <= result.backfilled,
                f"{result.deferred:,} deferred, {result.backfilled:,} back-filled")  # fmt: skip
    stage.check("the truth is still exact: every tick once", report is not None and report.ok,
                "; ".join(report.problems) if report else "no report")  # fmt: skip


def _breaker(stage: Stage) -> None:
    from k2.feeds.market import MarketConfig, symbol_names
    from k2.feeds.publish import FeedPublisher
    from k2.feeds.simulator import Simulator, SimulatorConfig
    from k2.feeds.verify import compare_with_truth
    from k2.pipeline import Pipeline
    from k2.pipeline.sequencing import sequence_checks
    from k2.services import Launcher
    from k2.services.process import free_port
    from k2.stream.admin import ensure_topics
    from k2.stream.producer import TickProducer

    base, _ = stage.scratch(
        "breaker",
        redis={"port": free_port(), "url": None},
        state={"backend": "redis"},
        lake={"commit_rows": 2_000},
        pipeline={"batch_max_messages": 1_000},
        resilience={"breakers": {"failure_threshold": 2, "reset_timeout_s": 1.0}},
    )
    from k2.config import load_settings

    settings = load_settings(**{**base.model_dump(), "data_dir": stage.workdir / "breaker"})
    launcher = Launcher(settings)
    launcher.up(["redis"], timeout_s=60)
    ticks = 20_000 if stage.fast else 60_000
    try:
        sim = Simulator(
            SimulatorConfig(MarketConfig(symbols=symbol_names(6, 41), chunk_ticks=2_000), seed=41)
        )
        ensure_topics(settings.kafka)
        producer = TickProducer(settings.kafka)
        publisher = FeedPublisher(producer, settings.kafka)
        for delivery in sim.deliveries(count=ticks):
            publisher.publish(delivery)
        producer.close()
        stage.say(
            f"a redis-server of this chapter's own holds the sequence state; {ticks:,} ticks wait in Kafka"
        )
        pipeline = Pipeline(settings, checks=sequence_checks(settings))
        moves: list[str] = []
        breaker = pipeline.breakers.get("state")
        breaker.listeners.append(lambda _old, new: moves.append(new.name))
        outage = threading.Thread(target=_outage, args=(stage, pipeline, launcher), daemon=True)
        outage.start()
        stats = pipeline.run(idle_timeout_s=3, max_seconds=120)
        outage.join(60)
        stage.say(f"the state breaker went {' -> '.join(['CLOSED', *moves])}; the pipeline stalled "
                  f"{stats.stalls} time(s) and resumed by itself")  # fmt: skip
        stage.check("the breaker opened, half-opened and closed again",
                    {"OPEN", "HALF_OPEN"} <= set(moves) and moves[-1:] == ["CLOSED"], " -> ".join(moves))  # fmt: skip
        truth_path = stage.workdir / "breaker-truth.json"
        sim.write_truth(truth_path)
        truth: dict[str, Any] = json.loads(truth_path.read_text())
        report = compare_with_truth(settings, truth)
        stage.check("nothing lost, nothing doubled through the outage", report.ok,
                    f"{sum(report.rows.values()):,} rows" if report.ok else "; ".join(report.problems))  # fmt: skip
    finally:
        launcher.down(["redis"])


def _outage(stage: Stage, pipeline: Any, launcher: Any) -> None:
    """Once two commits landed, stop redis-server for 3 s, then start it again."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and pipeline.checkpoint.commits < 2:
        time.sleep(0.05)
    launcher.down(["redis"])
    stage.say("redis-server stopped")
    time.sleep(3)
    launcher.up(["redis"], timeout_s=60)
    stage.say("redis-server started again")
