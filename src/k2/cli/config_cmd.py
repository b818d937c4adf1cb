"""``k2 config``: what K2 will use, with secrets masked."""

from __future__ import annotations

import typer
from rich.table import Table

from k2.cli.context import dump_json, obj

__all__ = ["app"]

app = typer.Typer(help="Inspect the effective configuration.", no_args_is_help=True)


def _flatten(data: dict[str, object], prefix: str = "") -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and key != "client":
            rows.extend(_flatten(value, name + "."))
        else:
            rows.append((name, value))
    return rows


@app.command("show")
def show(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Show every setting with its effective value and the K2_* variable that overrides it."""
    context = obj(ctx)
    data = context.settings.masked()
    if as_json:
        dump_json(data)
        return
    table = Table(title="K2 configuration", show_lines=False)
    table.add_column("setting")
    table.add_column("value")
    table.add_column("environment variable", style="dim")
    for name, value in _flatten(data):
        env = "" if name.startswith("effective.") else "K2_" + name.upper().replace(".", "__")
        table.add_row(name, str(value), env)
    context.console.print(table)
