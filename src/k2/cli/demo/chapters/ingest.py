"""Chapter 2, ingest: the ASX replay and the faulty simulator into Kafka, ``k2 ingest`` into Iceberg, live."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from k2.cli.demo.stage import Stage, tail
from k2.cli.demo.watch import watch_ingest
from k2.config import Settings

if TYPE_CHECKING:
    from k2.feeds.faults import FaultConfig

__all__ = ["FAULTS", "fault_config", "iceberg_rows", "ingest"]

#: 1 % duplicates, 0.1 % gaps (half filled late), reordering within 8 ticks, malformed payloads.
FAULTS = [
    "--gap-rate", "0.001", "--dup-rate", "0.01", "--reorder-rate", "0.01", "--reorder-window", "8",
    "--late-fill-fraction", "0.5", "--malformed-rate", "0.0005",
]  # fmt: skip
#: --fast: one day of three symbols (BHP's 38,000 ticks, and two thin ones with malformed lines)
FAST_ASX = ["--days", "2014-03-12", "--symbols", "BHP,DVN,MWR"]


def fault_config() -> FaultConfig:
    """``FAULTS`` for a simulator run in this process."""
    from k2.feeds.faults import FaultConfig

    return FaultConfig(gap_rate=0.001, dup_rate=0.01, reorder_rate=0.01, reorder_window=8,
                       late_fill_fraction=0.5, malformed_rate=0.0005)  # fmt: skip


def ingest(stage: Stage) -> None:
    settings = stage.settings
    truth = stage.workdir / "truth.json"
    count = 30_000 if stage.fast else 200_000
    # batches of 5,000 messages and commits of 10,000 rows: several snapshots to travel between,
    # even when the whole feed is in Kafka before the ingester reads its first batch
    lake = {**stage.derived.get("lake", {}), "commit_rows": 10_000}
    pipeline = {**stage.derived.get("pipeline", {}), "batch_max_messages": 5_000}
    ingester = stage.spawn(
        "ingest", ["ingest", "--idle-timeout", "4"], {**stage.derived, "lake": lake, "pipeline": pipeline}
    )
    sim = ["feed", "simulate", "--symbols", "8", "--count", str(count), "--seed", "7", *FAULTS,
           "--truth", str(truth), "--json"]  # fmt: skip
    if not stage.fast:
        sim += ["--rate", "4000"]  # about 50 s of live feed for the audience to watch
    feeds = {"sim": stage.spawn("feed-simulate", sim)}
    stage.say(f"simulator: {count:,} ticks of 8 symbols with injected faults, ground truth in {truth.name}")
    if stage.asx is not None:
        days = FAST_ASX if stage.fast else []
        feeds["asx"] = stage.spawn("feed-asx", ["feed", "asx", str(stage.asx), "--json", *days])
        stage.say(f"ASX replay: {stage.asx.name} ({'BHP, DVN, MWR on 2014-03-12' if stage.fast else 'every day'}), "
                  "Sydney time to UTC, malformed lines to the DLQ")  # fmt: skip
    stage.say(f"`k2 ingest` (pid {ingester.popen.pid}) consumes them into Iceberg; live rate:")
    seen = watch_ingest(stage, ingester, settings)
    counts: dict[str, Any] = {}
    for name, proc in feeds.items():
        code = proc.wait(60)
        stage.check(f"feed {name} finished", code == 0, f"exit {code}" if code else "")
        counts[name] = proc.json_output() if code == 0 else {}
    stats = seen.status.get("stats", {})
    stage.facts.update(truth=truth, feeds=counts, ingest=stats, ingest_rate=seen.mean_rate)
    stage.say(
        f"read {stats.get('messages', 0):,} messages, wrote {stats.get('written', 0):,} rows in "
        f"{stats.get('commits', 0):,} commits; mean {seen.mean_rate:,.0f} rows/s, peak {seen.peak_rate:,.0f} rows/s"
    )
    stage.check("k2 ingest stopped cleanly after the feeds went quiet", seen.exit_code == 0,
                f"exit {seen.exit_code}" + ("" if seen.exit_code == 0 else "\n" + tail(ingester)))  # fmt: skip
    on_topics = sum(int(c.get(k, 0)) for c in counts.values() for k in ("trades", "quotes", "malformed"))
    stage.check(
        "the pipeline read every message the feeds put on the tick topics",
        stats.get("messages") == on_topics,
        f"{stats.get('messages', 0):,} read, {on_topics:,} sent",
    )
    rows = iceberg_rows(settings)
    stage.check(
        "Iceberg holds every row the pipeline wrote",
        rows == stats.get("written"),
        f"{rows:,} rows in trades+quotes",
    )


def iceberg_rows(settings: Settings, kinds: tuple[str, ...] = ("trades", "quotes")) -> int:
    """Rows of the tables, counted from the data files' records (not from a snapshot summary)."""
    from k2.lake import open_catalog

    catalog = open_catalog(settings)
    total = 0
    for kind in kinds:
        table = catalog.load_table(f"{settings.lake.namespace}.{kind}")
        total += sum(task.file.record_count for task in table.scan().plan_files())
    return total
