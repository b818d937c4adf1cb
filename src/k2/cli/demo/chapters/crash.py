"""Chapter 8, resilience: ``k2 ingest`` is SIGKILLed in the middle of a commit and restarted: nothing lost or doubled."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from k2.cli.demo.chapters.ingest import fault_config, iceberg_rows
from k2.cli.demo.stage import Stage, tail
from k2.config import Settings

__all__ = ["crash"]

#: Between the trades table's commit and the quotes table's: the lake is half-way through a checkpoint.
STEP = "trades-committed:3"


def crash(stage: Stage) -> None:
    from k2.feeds.verify import compare_with_truth

    # small commits, so that the third comes well before the feed's end
    settings, sections = stage.scratch(
        "crash", lake={"commit_rows": 3_000}, pipeline={"batch_max_messages": 2_000}
    )
    truth_path = stage.workdir / "crash-truth.json"
    count = 20_000 if stage.fast else 100_000
    _feed(settings, count, truth_path)
    stage.say(f"{count:,} faulty ticks in Kafka; `k2 ingest` starts and will be SIGKILLed at its third commit, "
              "after the trades table committed and before the quotes table did")  # fmt: skip
    first = stage.spawn("ingest-crash", ["ingest", "--idle-timeout", "4", "--crash-at", STEP], sections)
    code = first.wait(180)
    stage.check("the ingester died by SIGKILL mid-commit", code == -signal.SIGKILL, f"exit {code}")
    trades, quotes = iceberg_rows(settings, ("trades",)), iceberg_rows(settings, ("quotes",))
    stage.say(f"after the kill: trades hold {trades:,} rows, quotes {quotes:,}: the trades table is a commit "
              "ahead of the quotes table and the sequence state; restarting `k2 ingest`")  # fmt: skip
    second = stage.spawn("ingest-restart", ["ingest", "--idle-timeout", "4"], sections)
    code = second.wait(240)
    stage.check(
        "the restarted ingester ran to the end", code == 0, f"exit {code}" if code == 0 else tail(second)
    )
    truth: dict[str, Any] = json.loads(truth_path.read_text())
    report = compare_with_truth(settings, truth, drained=True)
    stage.say(f"now {sum(report.rows.values()):,} rows; the feed sent {sum(report.expected_rows.values()):,} "
              "unique ticks")  # fmt: skip
    stage.check("nothing lost, nothing doubled, every gap recorded once", report.ok,
                "truth table exact" if report.ok else "; ".join(report.problems))  # fmt: skip


def _feed(settings: Settings, count: int, truth: Path) -> None:
    """``count`` simulated ticks with the demo's faults into Kafka, and their ground truth."""
    from k2.feeds.market import MarketConfig, symbol_names
    from k2.feeds.publish import FeedPublisher
    from k2.feeds.simulator import Simulator, SimulatorConfig
    from k2.stream.admin import ensure_topics
    from k2.stream.producer import TickProducer

    ensure_topics(settings.kafka)
    sim = Simulator(SimulatorConfig(MarketConfig(symbols=symbol_names(6, 17)), fault_config(), seed=17))
    producer = TickProducer(settings.kafka)
    publisher = FeedPublisher(producer, settings.kafka)
    for delivery in sim.deliveries(count=count):
        publisher.publish(delivery)
    producer.close()
    sim.write_truth(truth)
