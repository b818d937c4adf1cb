"""``k2 dlq``: what the pipeline could not ingest, and re-submitting it after a fix."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from k2.cli.context import dump_json, handle_errors, obj

__all__ = ["app"]

app = typer.Typer(help="Inspect and replay the dead-letter queue.", no_args_is_help=True)


@app.command("list")
@handle_errors
def list_letters(
    ctx: typer.Context,
    limit: int = typer.Option(50, min=1, help="At most this many, oldest first."),
    reason: str | None = typer.Option(None, help="Only letters whose reason contains this text."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Dead letters with their reason, source and time."""
    from k2.pipeline.dlq import read_dead_letters

    context = obj(ctx)
    malformed: list[str] = []
    letters = [
        lt
        for lt in read_dead_letters(
            context.settings.kafka, on_malformed=lambda exc: malformed.append(str(exc))
        )
        if reason is None or reason in lt.reason
    ][:limit]
    if as_json:
        dump_json([{"at": lt.at.isoformat(), "reason": lt.reason, "source": lt.source, "bytes": len(lt.value)}
                   for lt in letters])  # fmt: skip
        return
    table = Table(title=f"dead letters ({len(letters)})")
    for col in ("at", "reason", "source", "bytes"):
        table.add_column(col)
    for lt in letters:  # reasons quote the rejected input: plain text, never Rich markup
        table.add_row(
            lt.at.isoformat(timespec="seconds"), Text(lt.reason), Text(lt.source), str(len(lt.value))
        )
    context.console.print(table)
    if malformed:
        context.err.print(f"skipped {len(malformed)} message(s) without K2's dead-letter headers")


@app.command()
@handle_errors
def replay(
    ctx: typer.Context,
    reason: str | None = typer.Option(None, help="Only letters whose reason contains this text."),
) -> None:
    """Re-submit letters to the K2 tick topic they came from (each letter once, across runs).

    Letters left out by --reason stay pending for a later run. Letters naming any other topic,
    and messages without K2's headers, are never replayed: they are reported.
    """
    from k2.pipeline.dlq import replay_dead_letters

    context = obj(ctx)
    report = replay_dead_letters(
        context.settings.kafka, accept=lambda lt: reason is None or reason in lt.reason
    )
    context.console.print(
        f"replayed {report.replayed} dead letters; {report.pending} left for later (--reason); "
        f"refused {len(report.refused)} (not a K2 tick topic); skipped {len(report.malformed)} without K2's headers"
    )
    for source in report.refused[:20]:
        context.err.print(f"  refused: {escape(source)}")
    for where in report.malformed[:20]:
        context.err.print(f"  skipped: {escape(where)}")
