"""The bill as a table (rich) or as JSON; estimated prices are marked wherever they appear."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from k2.cost.model import Bill

__all__ = ["render", "to_json"]


def _usd(value: float | None) -> str:
    if value is None:
        return "no price"
    return f"${value:,.0f}" if abs(value) >= 100 else f"${value:,.2f}"


def to_json(bills: list[Bill]) -> str:
    """One JSON document: a list of bills (one per scenario)."""
    return json.dumps([b.to_dict() for b in bills], indent=2, default=_jsonable)


def _jsonable(value: Any) -> Any:
    if value == float("inf"):
        return None
    return str(value)


def render(bill: Bill, console: Console) -> None:
    """Lines, components, unit costs, sizing and the managed comparisons of one bill."""
    w = bill.workload
    title = (f"K2 on AWS {w.region}, scenario '{w.name}': Kafka {w.kafka}, catalog {w.catalog}, "
             f"state {w.state}")  # fmt: skip
    lines = Table(title=title, title_justify="left", show_lines=False)
    for col, justify in (("component", "left"), ("item", "left"), ("quantity", "right"), ("unit", "left"),
                         ("unit price", "right"), ("monthly", "right"), ("why", "left")):  # fmt: skip
        lines.add_column(col, justify=justify)  # type: ignore[arg-type]
    for line in bill.lines:
        price = f"{line.unit_price:.4g}" + ("*" if line.estimate else "")
        lines.add_row(line.component, line.item, f"{line.quantity:,.1f}", line.unit, price,
                      _usd(line.monthly), line.note)  # fmt: skip
    parts = Table(show_header=True, title="by component", title_justify="left")
    parts.add_column("component")
    parts.add_column("monthly", justify="right")
    parts.add_column("share", justify="right")
    for component, value in bill.by_component().items():
        parts.add_row(component, _usd(value), f"{value / bill.total:.0%}" if bill.total else "-")
    parts.add_row(Text("total", style="bold"), Text(_usd(bill.total), style="bold"), "100%")
    s = bill.sizing
    facts = Text.assemble(
        f"${bill.per_million_messages:,.2f} per million messages ({s['messages_per_month'] / 1e6:,.0f} M a month); ",
        f"${bill.per_tb_stored:,.0f} a month per TB in the lake ({s['lake_stored_gb'] / 1000:,.2f} TB)\n",
        f"sizing: {s['ingest_vcpus']:.1f} ingest vCPU on {s['ingest_nodes']:.0f} nodes (N+1), "
        f"{s['kafka_brokers']:.0f} brokers, {s['kafka_disk_gb']:,.0f} GB Kafka disk, Redis {s['redis_gb']:.2f} GB, "
        f"Bloom {s['bloom_ram_gb_per_ingest_node']:.3f} GB RAM per ingest node, "
        f"{s['query_nodes']:.0f} query nodes; headroom x{w.headroom:g} over the stated peak\n",
    )
    compare = Table(title="managed alternatives (list prices where known)", title_justify="left")
    for col in ("alternative", "monthly", "K2 (its line)", "freshness", "not included"):
        compare.add_column(col)
    for c in bill.comparisons:
        mark = "*" if c["estimate"] else ""
        compare.add_row(c["alternative"], _usd(c["monthly"]) + mark, _usd(c["k2_monthly"]), c["freshness"],
                        c["not_included"])  # fmt: skip
    notes = Text(
        ("* estimated: us-east-1 price x the region's uplift (see the price file)\n" if any(
            line.estimate for line in bill.lines) else "")
        + f"prices: {bill.price_file}\nmeasured: "
        + "; ".join(f"{k} {v}" for k, v in sorted(bill.measured_sources.items())),
        style="dim",
    )  # fmt: skip
    console.print(Group(lines, parts, facts, compare, notes))
    console.print()
