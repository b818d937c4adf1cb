"""``k2 cost``: the monthly AWS bill of running K2, sized from K2's own benchmark results.

Imports of the model stay inside the command so that ``k2 --help`` does not load it.
"""

from __future__ import annotations

from pathlib import Path

import typer

from k2.cli.context import handle_errors, obj

__all__ = ["cost"]

_SCENARIOS = ("asx", "us-equities", "research", "all")


@handle_errors
def cost(
    ctx: typer.Context,
    scenario: str = typer.Option("asx", help="Preset workload: asx, us-equities, research, or all three."),
    region: str | None = typer.Option(None, help="ap-southeast-2 (default) or us-east-1."),
    kafka: str | None = typer.Option(None, help="Kafka deployment: self-managed, msk or msk-serverless."),
    catalog: str | None = typer.Option(None, help="Iceberg catalog: glue (S3 + Glue/REST) or postgres."),
    state: str | None = typer.Option(None, help="Sequence state and exact dedup: redis or embedded."),
    peak_rate: float | None = typer.Option(None, help="Peak messages per second."),
    daily_messages: float | None = typer.Option(None, help="Messages per trading day."),
    trade_share: float | None = typer.Option(None, help="Share of messages that are trades (0-1)."),
    message_bytes: float | None = typer.Option(
        None, help="Average Kafka message size in bytes (default: K2's measured Avro size)."
    ),
    kafka_retention_days: float | None = typer.Option(None, help="Days Kafka keeps messages."),
    iceberg_retention_days: float | None = typer.Option(None, help="Days the lake keeps data."),
    replication: int | None = typer.Option(None, help="Kafka replication factor."),
    qps: float | None = typer.Option(None, help="Queries per second."),
    query_mix: str | None = typer.Option(None, help="Query shares, e.g. window=0.5,bars=0.4,asof=0.1."),
    headroom: float | None = typer.Option(None, help="Capacity over the stated peak (2 = 50 % busy)."),
    symbols: int | None = typer.Option(None, help="(venue, symbol) sequence keys."),
    partitions: int | None = typer.Option(None, help="Kafka partitions per topic."),
    active_hours: float | None = typer.Option(None, help="Hours a trading day the feed is live."),
    commit_interval: float | None = typer.Option(None, help="Seconds between Iceberg commits (K2: 1)."),
    egress_gb: float | None = typer.Option(None, help="GB a month of answers leaving AWS."),
    measured: Path | None = typer.Option(
        None,
        help="Benchmark results (directory or merged JSON); default ./benchmarks/results, else the package's.",
    ),
    prices: Path | None = typer.Option(None, help="Price file (default: the dated one shipped with K2)."),
    as_json: bool = typer.Option(False, "--json", help="Print the bill(s) as JSON."),
) -> None:
    """The monthly AWS bill of running K2: by component, per million messages and per TB stored."""
    from k2.cost import SCENARIOS, estimate, load_measured, load_prices
    from k2.cost.errors import CostInputError
    from k2.cost.inputs import parse_mix
    from k2.cost.report import render, to_json

    if scenario not in _SCENARIOS:
        raise CostInputError("--scenario", f"{scenario!r} is not one of {', '.join(_SCENARIOS)}")
    names = list(SCENARIOS) if scenario == "all" else [scenario]
    changes = {
        "region": region, "kafka": kafka, "catalog": catalog, "state": state,
        "peak_msgs_per_s": peak_rate, "daily_messages": daily_messages, "trade_share": trade_share,
        "message_bytes": message_bytes, "kafka_retention_days": kafka_retention_days,
        "iceberg_retention_days": iceberg_retention_days, "replication": replication, "qps": qps,
        "query_mix": parse_mix(query_mix) if query_mix is not None else None, "headroom": headroom,
        "symbols": symbols, "partitions": partitions, "active_hours": active_hours, "egress_gb_month": egress_gb,
        "commit_interval_s": commit_interval,
    }  # fmt: skip
    workloads = [SCENARIOS[n].with_changes(**changes) for n in names]  # bad values stop here, exit 2
    book, figures = load_prices(prices), load_measured(measured)
    bills = [estimate(w, figures, book) for w in workloads]
    if as_json:
        typer.echo(to_json(bills))
        return
    from rich.console import Console

    # A bill is wide: keep its columns readable when piped (rich falls back to 80 columns there).
    console = obj(ctx).console
    console = Console(width=max(console.width, 150)) if not console.is_terminal else console
    for bill in bills:
        render(bill, console)
