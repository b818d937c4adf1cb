"""Chapter 10, cost: what running K2 at ASX volume costs a month, from `k2 cost`."""

from __future__ import annotations

from k2.cli.demo.stage import Stage

__all__ = ["cost"]


def cost(stage: Stage) -> None:
    bill = stage.k2("cost", ["cost", "--scenario", "asx", "--json"]).json_output()[0]
    w = bill["workload"]
    stage.say(f"workload: {w['daily_messages']:,.0f} messages a trading day, peak {w['peak_msgs_per_s']:,}/s, "
              f"{w['region']}, Kafka {w['kafka']}, catalog {w['catalog']}")  # fmt: skip
    for component, usd in sorted(bill["by_component"].items(), key=lambda c: -c[1])[:4]:
        stage.say(f"  {component:<10} ${usd:>10,.2f} / month")
    stage.say(f"total [bold]${bill['total_monthly_usd']:,.2f} a month[/]: ${bill['usd_per_million_messages']:.4f} "
              f"per million messages" + (" (some Sydney prices are estimates)" if bill["estimates"] else ""))  # fmt: skip
    rate = stage.facts.get("ingest_rate")
    if rate:
        stage.say(f"sized from K2's benchmark results; this machine ingested {rate:,.0f} rows/s in chapter 2")
    lines = sum(line["monthly"] for line in bill["lines"])
    stage.check("the bill adds up from priced lines", bill["total_monthly_usd"] > 0
                and abs(lines - bill["total_monthly_usd"]) < 0.01, f"{len(bill['lines'])} lines")  # fmt: skip
