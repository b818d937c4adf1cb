"""``k2 status``: what the ingest pipeline is doing now: level, transitions, deferral, breakers.

The level and the breakers live inside the pipeline process; it writes them to
``<data_dir>/status/ingest.json`` every second and on every change (``k2.resilience.status``).
This command reads that file, asks the launcher about the services and the catalog about the
tables' snapshots, and renders all of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer
from rich.console import Group
from rich.panel import Panel
from rich.table import Table

from k2.cli.context import dump_json, handle_errors, obj

if TYPE_CHECKING:
    from k2.config import Settings

__all__ = ["status"]

_LEVEL_STYLE = {"NORMAL": "green", "SOFT": "yellow", "GRACEFUL": "yellow", "AGGRESSIVE": "red",
                "CIRCUIT_BREAK": "bold red"}  # fmt: skip
_BREAKER_STYLE = {"closed": "green", "half_open": "yellow", "open": "red"}


@handle_errors
def status(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the facts as JSON instead of tables."),
    services: bool = typer.Option(True, help="Include the local services' status."),
    tables: bool = typer.Option(True, help="Include the tables' snapshot counts."),
) -> None:
    """Show the pipeline's degradation level, its transitions, deferred/back-filled counts and breakers."""
    from k2.resilience.status import read_status

    context = obj(ctx)
    settings = context.settings
    document = read_status(settings.data_dir)
    facts: dict[str, Any] = {"ingest": document}
    if services:
        facts["services"] = _services(settings)
    if tables:
        facts["tables"] = _tables(settings)
    if as_json:
        dump_json(facts)
        return
    parts: list[Any] = []
    if document is None:
        parts.append("[dim]no ingest status yet: start `k2 ingest` (it writes status/ingest.json)[/]")
    else:
        parts += _render_ingest(document)
    if services:
        parts.append(_simple_table("services", facts["services"]))
    if tables:
        parts.append(_simple_table("tables", facts["tables"]))
    context.console.print(Group(*parts))


def _render_ingest(doc: dict[str, Any]) -> list[Any]:
    deg = doc["degradation"]
    level = deg["level"]
    state = "running" if doc.get("running") and doc.get("alive") else "stopped"
    head = (
        f"[{_LEVEL_STYLE.get(level, '')}]{level}[/] for {deg['since_s']:.0f}s  "
        f"(pipeline pid {doc.get('pid')}, {state}, updated {doc.get('updated_at')})\n"
        f"defer tiers {deg['defer_tiers'] or '-'}  consume {deg['consume']}  back-fill {deg['backfill']}\n"
        f"lag {doc['signals']['lag']:,} (peak {doc['signals']['peak_lag']:,})  "
        f"busy ratio {doc['signals']['batch_ratio']:.2f}\n"
        f"deferred {doc['deferred']:,}  spilled {doc['spilled']:,}  back-filled {doc['backfilled']:,}"
    )
    if doc.get("stalled"):
        head += f"\n[red]stalled[/]: {doc.get('stall_cause')}"
    stats = doc.get("stats", {})
    head += (
        f"\nread {stats.get('messages', 0):,}  written {stats.get('written', 0):,}  "
        f"commits {stats.get('commits', 0):,}  stalls {stats.get('stalls', 0):,}"
    )
    out: list[Any] = [Panel(head, title="ingest")]
    transitions = Table(title="level transitions")
    for col in ("at", "from", "to", "cause", "detail"):
        transitions.add_column(col)
    for t in doc.get("transitions", [])[-15:]:
        transitions.add_row(t["at"], t["from"], t["to"], t["cause"], t["detail"])
    out.append(transitions)
    breakers = Table(title="circuit breakers")
    for col in ("name", "state", "failures", "retry in s", "opened"):
        breakers.add_column(col)
    for b in doc.get("breakers", []):
        style = _BREAKER_STYLE.get(b["state"], "")
        breakers.add_row(
            b["name"],
            f"[{style}]{b['state']}[/]",
            str(b["failures"]),
            f"{b['retry_after']:.1f}",
            str(b["opened_total"]),
        )
    out.append(breakers)
    return out


def _services(settings: Settings) -> list[dict[str, Any]]:
    from k2.services import Launcher

    try:
        return [
            {"service": s.name, "state": s.state, "address": s.address, "version": s.version or "-"}
            for s in Launcher(settings).status()
        ]
    except Exception as exc:  # a status display shows what it can
        return [{"service": "?", "state": "unknown", "address": "-", "version": str(exc)}]


def _tables(settings: Settings) -> list[dict[str, Any]]:
    from k2.lake.catalog import open_catalog

    try:
        catalog = open_catalog(settings)
        names = catalog.list_tables(settings.lake.namespace)
    except Exception as exc:
        return [{"table": "-", "snapshots": "-", "rows": str(exc)}]
    out = []
    for identifier in names:
        table = catalog.load_table(identifier)
        current = table.current_snapshot()
        summary = current.summary if current is not None else None
        rows = summary.get("total-records") if summary is not None else None
        out.append({"table": ".".join(identifier), "snapshots": len(table.snapshots()), "rows": rows or 0})
    return out


def _simple_table(title: str, rows: list[dict[str, Any]]) -> Table:
    table = Table(title=title)
    for col in rows[0] if rows else ("-",):
        table.add_column(str(col))
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    return table
