"""Chapters 4 and 5, monitor and proof: what the checks caught, then Iceberg against the exact truth."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from rich.table import Table

from k2.cli.demo.stage import Stage
from k2.types import TICK_KINDS

__all__ = ["monitor", "proof"]


def monitor(stage: Stage) -> None:
    import polars as pl

    from k2.feeds.verify import table_frame
    from k2.pipeline.dlq import read_dead_letters

    settings = stage.settings
    truth: dict[str, Any] = json.loads(stage.facts["truth"].read_text())
    gaps = table_frame(settings, "sequence_gaps")
    per = gaps.group_by("exchange", "event").len()
    count = {(e, ev): n for e, ev, n in per.iter_rows()}
    for exchange in sorted({e for e, _ in count}):
        stage.say(
            f"{exchange}: {count.get((exchange, 'opened'), 0):,} gaps found, "
            f"{count.get((exchange, 'recovered'), 0):,} of them filled later by late ticks"
        )
    sample = gaps.filter(pl.col("event") == "recovered").head(1)
    for row in sample.iter_rows(named=True):
        stage.say(f"  e.g. {row['symbol']} {row['kind']} sequence {row['first_missing']}-{row['last_missing']} "
                  f"missing, recovered by {row['recovered_by']}")  # fmt: skip
    sent_twice = sum(truth["kinds"][k]["duplicate_copies"] for k in TICK_KINDS)
    dropped = int(stage.facts["ingest"].get("duplicates", 0))
    stage.say(f"duplicates dropped by the pipeline: {dropped:,} (the simulator sent {sent_twice:,} copies)")
    stage.check("every duplicate copy was dropped, nothing else", dropped == sent_twice,
                f"{dropped:,} dropped, {sent_twice:,} sent twice")  # fmt: skip

    letters = list(read_dead_letters(settings.kafka))
    reasons = Counter(_reason(lt.reason) for lt in letters)
    stage.say(f"dead-letter queue: {len(letters):,} messages, by reason:")
    for reason, n in reasons.most_common(5):
        stage.say(f"  {n:>6,}  {reason}")
    if letters:
        stage.say(f"  e.g. source {letters[0].source}")
    feeds = stage.facts["feeds"]
    expected = sum(int(c.get("dead_letters", 0)) + int(c.get("malformed", 0)) for c in feeds.values())
    stage.check(
        "the DLQ holds each malformed line and payload once, with a reason",
        len(letters) == expected and all(lt.reason for lt in letters),
        f"{len(letters):,} letters; the feeds sent {expected:,} malformed lines and payloads",
    )
    due = sum(len(truth["kinds"][k]["gaps"]) for k in TICK_KINDS)
    stage.check("the simulator's gaps were all found", count.get(("SIM", "opened"), 0) == due,
                f"{count.get(('SIM', 'opened'), 0):,} found, {due:,} injected")  # fmt: skip


def _reason(reason: str) -> str:
    """A reason without the rejected input it quotes (so that reasons group)."""
    return reason.split(":")[0][:80]


def proof(stage: Stage) -> None:
    """Today's proof: every unique tick once, every gap recorded, every late fill recovering its gap."""
    import polars as pl

    from k2.feeds.verify import table_frame

    settings = stage.settings
    truth: dict[str, Any] = json.loads(stage.facts["truth"].read_text())
    gaps = table_frame(settings, "sequence_gaps").filter(pl.col("exchange") == "SIM")
    table = Table(title="Iceberg against the simulator's ground truth")
    for col in ("", "truth", "K2", "match"):
        table.add_column(col)
    checks: list[tuple[str, int, int]] = []
    asx_rows = asx_ids = 0
    for kind in TICK_KINDS:
        k = truth["kinds"][kind]
        rows = table_frame(settings, kind).select("message_id", "exchange")
        sim = rows.filter(pl.col("exchange") == "SIM")
        asx = rows.filter(pl.col("exchange") == "ASX")
        asx_rows, asx_ids = asx_rows + asx.height, asx_ids + asx["message_id"].n_unique()
        mine = gaps.filter(pl.col("kind") == kind)
        checks += [
            (f"{kind}: unique ticks", len(k["sent_ids"]), sim["message_id"].n_unique()),
            (f"{kind}: rows (each tick once)", len(k["sent_ids"]), sim.height),
            (f"{kind}: gaps recorded", len(k["gaps"]), mine.filter(pl.col("event") == "opened").height),
            (f"{kind}: gaps recovered by late fills", sum(1 for g in k["gaps"] if g["filled"]),
             mine.filter(pl.col("event") == "recovered").height),
        ]  # fmt: skip
    asx_sent = sum(int(stage.facts["feeds"].get("asx", {}).get(k, 0)) for k in TICK_KINDS)
    if "asx" in stage.facts["feeds"]:
        checks.append(("ASX: rows, each line once", asx_sent, asx_ids))
        checks.append(("ASX: rows (no line twice)", asx_ids, asx_rows))
    for label, want, got in checks:
        table.add_row(label, f"{want:,}", f"{got:,}", "[green]yes[/]" if want == got else "[bold red]no[/]")
    stage.context.console.print(table)
    wrong = [label for label, want, got in checks if want != got]
    stage.check("Iceberg equals the ground truth, row for row and gap for gap", not wrong, "; ".join(wrong))
