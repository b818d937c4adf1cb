"""``k2 config``: what K2 will use, with secrets masked; the API replicas' shared hybrid settings."""

from __future__ import annotations

import typer
from rich.table import Table

from k2.cli.context import dump_json, handle_errors, obj

__all__ = ["app"]

app = typer.Typer(help="Inspect the effective configuration.", no_args_is_help=True)
hybrid_app = typer.Typer(
    help="The hybrid (live tail) settings that API replicas share through Redis (api.shared_hybrid).",
    no_args_is_help=True,
)
app.add_typer(hybrid_app, name="hybrid")


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


def _changes(differs: dict[str, dict[str, object]], before: str, after: str) -> Table:
    table = Table(show_lines=False)
    for column in ("setting", before, after):
        table.add_column(column)
    for name, values in differs.items():
        table.add_row(f"hybrid.{name}", str(values["other"]), str(values["own"]))
    return table


@hybrid_app.command("show")
@handle_errors
def hybrid_show(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Show the replica group's hybrid settings in Redis and how this configuration's differ."""
    from k2.api.hybrid_group import HybridGroup

    context = obj(ctx)
    own = context.settings.hybrid
    group = HybridGroup(context.settings.redis)
    try:
        doc = group.read()
    finally:
        group.close()
    if as_json:
        dump_json({
            "key": group.key,
            "group": None if doc is None else {
                "fingerprint": doc.settings.fingerprint(), "published_by": doc.published_by,
                "published_at": doc.published_at, "settings": doc.settings.model_dump(mode="json"),
            },
            "local": {"fingerprint": own.fingerprint(), "settings": own.model_dump(mode="json")},
        })  # fmt: skip
        return
    if doc is None:
        context.console.print(
            f"{group.key}: no shared hybrid settings yet; the first replica to start publishes its own "
            f"(this configuration's fingerprint: {own.fingerprint()})"
        )
        return
    context.console.print(
        f"{group.key}: fingerprint {doc.settings.fingerprint()}, published by {doc.published_by} "
        f"at {doc.published_at}"
    )
    differs = doc.settings.differences(own)
    if differs:
        context.console.print(_changes(differs, "this configuration", "group (served)"))
    else:
        context.console.print("this configuration's hybrid settings are the group's")


@hybrid_app.command("publish")
@handle_errors
def hybrid_publish(ctx: typer.Context) -> None:
    """Make this configuration's hybrid.* settings the replica group's (overwriting the stored ones).

    Running replicas report the change in /health (hybrid: stale) and their log within
    api.shared_hybrid_check_s, and serve the new settings once restarted (a rolling restart).
    """
    from k2.api.hybrid_group import HybridGroup

    context = obj(ctx)
    own = context.settings.hybrid
    group = HybridGroup(context.settings.redis)
    try:
        doc, previous = group.publish(own)
    finally:
        group.close()
    context.console.print(f"{group.key}: published fingerprint {doc.settings.fingerprint()}")
    if previous is None:
        context.console.print("(no usable settings were stored before)")
    elif differs := own.differences(previous.settings):
        context.console.print(_changes(differs, "before", "now"))
    else:
        context.console.print("(unchanged: the group already had these settings)")
    context.console.print("restart the replicas (one at a time) to serve them")
