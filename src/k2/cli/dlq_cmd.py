"""``k2 dlq``: what the pipeline could not ingest, and re-submitting it after a fix."""

from __future__ import annotations

import typer
from rich.table import Table

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
    letters = [
        lt for lt in read_dead_letters(context.settings.kafka) if reason is None or reason in lt.reason
    ][:limit]
    if as_json:
        dump_json([{"at": lt.at.isoformat(), "reason": lt.reason, "source": lt.source, "bytes": len(lt.value)}
                   for lt in letters])  # fmt: skip
        return
    table = Table(title=f"dead letters ({len(letters)})")
    for col in ("at", "reason", "source", "bytes"):
        table.add_column(col)
    for lt in letters:
        table.add_row(lt.at.isoformat(timespec="seconds"), lt.reason, lt.source, str(len(lt.value)))
    context.console.print(table)


@app.command()
@handle_errors
def replay(
    ctx: typer.Context,
    reason: str | None = typer.Option(None, help="Only letters whose reason contains this text."),
) -> None:
    """Re-submit letters to the topic they came from (each letter once, across runs)."""
    from k2.pipeline.dlq import replay_dead_letters

    context = obj(ctx)
    replayed, skipped = replay_dead_letters(
        context.settings.kafka, accept=lambda lt: reason is None or reason in lt.reason
    )
    context.console.print(f"replayed {replayed} dead letters; skipped {skipped}")
