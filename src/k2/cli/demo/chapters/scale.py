"""Chapter 9, scale: a second ``k2 ingest`` joins the consumer group, the partitions are shared, the result is exact.

The feed runs in this process, paced, until the second ingester has been given partitions and for a
few seconds after, so that both do work whatever the machine's speed.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from k2.cli.demo.chapters.ingest import fault_config
from k2.cli.demo.stage import Proc, Stage, tail

__all__ = ["scale"]

RATE = 4_000  # ticks per second
AFTER_JOIN_S = 6.0  # seconds of feed after the rebalance


def scale(stage: Stage) -> None:
    from k2.feeds.market import MarketConfig, symbol_names
    from k2.feeds.publish import FeedPublisher
    from k2.feeds.simulator import Simulator, SimulatorConfig
    from k2.feeds.verify import compare_with_truth
    from k2.stream.admin import ensure_topics
    from k2.stream.producer import TickProducer

    settings, sections = stage.scratch("scale")
    ensure_topics(settings.kafka)
    sim = Simulator(SimulatorConfig(MarketConfig(symbols=symbol_names(12, 23), chunk_ticks=500), fault_config(),
                                    seed=23))  # fmt: skip
    producer = TickProducer(settings.kafka)
    publisher = FeedPublisher(producer, settings.kafka)
    stage.say(f"a faulty feed of 12 symbols at {RATE:,} ticks/s; ingester A starts alone")
    a = stage.spawn("ingest-a", ["ingest", "--idle-timeout", "4"], sections)
    b: Proc | None = None
    before = 0
    joined_at: float | None = None
    mine_a: set[str] = set()
    mine_b: set[str] = set()
    began, sent = time.monotonic(), 0
    for delivery in sim.deliveries():
        sent += publisher.publish(delivery)
        producer.poll(0)
        now = time.monotonic()
        if b is None and a.events("partitions assigned"):
            stage.say(f"A owns {_show(_last_owned(a))}; ingester B starts")
            before = len(a.events("partitions assigned"))
            b = stage.spawn("ingest-b", ["ingest", "--idle-timeout", "4"], sections)
        elif b is not None and joined_at is None and _rebalanced(a, b, before):
            joined_at, mine_a, mine_b = now, _last_owned(a), _last_owned(b)
            stage.say(f"B joined the group, the partitions were rebalanced: A owns {_show(mine_a)}, "
                      f"B {_show(mine_b)}")  # fmt: skip
        if joined_at is not None and now - joined_at > AFTER_JOIN_S / (2 if stage.fast else 1):
            break
        if now - began > 180 or not a.alive or (b is not None and not b.alive):
            break
        ahead = began + sent / RATE - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    producer.close()
    truth_path = stage.workdir / "scale-truth.json"
    sim.write_truth(truth_path)
    stage.say(f"the feed stopped after {sent:,} messages; both ingesters drain and stop when idle")
    codes = [p.wait(300) for p in (a, b) if p is not None]
    stage.check("both ingesters ended cleanly", codes == [0, 0], f"exits {codes}" if codes != [0, 0] else "")
    read = {p.name: _read(p) for p in (a, b) if p is not None}
    stage.say(
        "messages read: "
        + ", ".join(f"{name.removeprefix('ingest-').upper()} {n:,}" for name, n in read.items())
    )
    stage.check("after the rebalance the two own disjoint partitions and both did work",
                bool(mine_b) and not (mine_a & mine_b) and len(read) == 2 and all(read.values()),
                f"A {len(mine_a)}, B {len(mine_b)} partitions")  # fmt: skip
    truth: dict[str, Any] = json.loads(truth_path.read_text())
    report = compare_with_truth(settings, truth, drained=True)
    stage.check("two processes wrote exactly what one would have", report.ok,
                f"{sum(report.rows.values()):,} rows" if report.ok else "; ".join(report.problems) + tail(a))  # fmt: skip


def _rebalanced(a: Proc, b: Proc, a_before: int) -> bool:
    """B was given partitions, and A's were given anew since B started."""
    return bool(b.events("partitions assigned")) and len(a.events("partitions assigned")) > a_before


def _last_owned(proc: Proc) -> set[str]:
    events = proc.events("partitions assigned")
    return set(events[-1].get("partitions", {})) if events else set()


def _show(owned: set[str]) -> str:
    by_topic: dict[str, list[str]] = {}
    for name in sorted(owned):
        topic, _, p = name.partition("[")
        short = topic.split(".", 1)[-1]  # trades, quotes, spill.trades, spill.quotes
        by_topic.setdefault(short, []).append(p.rstrip("]"))
    return ", ".join(f"{t}[{','.join(ps)}]" for t, ps in sorted(by_topic.items())) or "nothing yet"


def _read(proc: Proc) -> int:
    """Messages read, from the process's last words (``ingest stopped: read N, ...``)."""
    found = re.search(r"ingest stopped: read ([\d,]+)", proc.output())
    return int(found.group(1).replace(",", "")) if found else 0
