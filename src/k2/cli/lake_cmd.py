"""``k2 lake``: create, inspect and maintain the Iceberg tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import typer
from rich.table import Table as RichTable

from k2.cli.context import dump_json, handle_errors, obj
from k2.types import TABLES

__all__ = ["app"]

app = typer.Typer(help="Create, inspect and maintain K2's Iceberg tables.", no_args_is_help=True)

_TABLE = typer.Argument("trades", help=f"One of: {', '.join(TABLES)}.")


def _check(name: str) -> str:
    if name not in TABLES:
        raise typer.BadParameter(f"unknown table {name!r}; choose from {', '.join(TABLES)}")
    return name


@app.command()
@handle_errors
def init(ctx: typer.Context) -> None:
    """Create the catalog namespace and every table (existing tables are left alone)."""
    from k2.lake import ensure_tables, open_catalog

    context = obj(ctx)
    tables = ensure_tables(open_catalog(context.settings), context.settings.lake.namespace)
    for name, table in tables.items():
        context.console.print(f"[green]ok[/] {context.settings.lake.namespace}.{name}  {table.location()}")


@app.command()
@handle_errors
def describe(ctx: typer.Context, name: str = _TABLE, as_json: bool = typer.Option(False, "--json")) -> None:
    """Schema, partitioning, sort order, properties and size of a table."""
    from k2.lake import load_table, open_catalog
    from k2.lake.offsets import snapshot_offsets

    context = obj(ctx)
    table = load_table(open_catalog(context.settings), context.settings.lake.namespace, _check(name))
    snap = table.current_snapshot()
    files = list(table.scan().plan_files()) if snap else []
    info = {
        "table": str(table.name()),
        "location": table.location(),
        "schema": [
            f"{f.field_id}:{f.name} {f.field_type}{'' if f.required else ' (optional)'}"
            for f in table.schema().fields
        ],
        "partitioning": str(table.spec()),
        "sort_order": str(table.sort_order()),
        "properties": table.properties,
        "snapshots": len(table.snapshots()),
        "data_files": len(files),
        "rows": sum(t.file.record_count for t in files),
        "offsets": {f"{t}[{p}]": o for (t, p), o in snapshot_offsets(table, snap).items()},
    }
    if as_json:
        dump_json(info)
        return
    for key, value in info.items():
        if isinstance(value, list):
            context.console.print(f"[bold]{key}[/]:")
            for item in value:
                context.console.print(f"  {item}")
        else:
            context.console.print(f"[bold]{key}[/]: {value}")


@app.command()
@handle_errors
def snapshots(
    ctx: typer.Context,
    name: str = _TABLE,
    limit: int = typer.Option(20, min=1, help="Newest first; how many."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Snapshots with commit time, operation, rows added and the Kafka offsets they cover."""
    from k2.lake import load_table, open_catalog
    from k2.lake.offsets import snapshot_offsets

    context = obj(ctx)
    table = load_table(open_catalog(context.settings), context.settings.lake.namespace, _check(name))
    rows = []
    for snap in sorted(table.snapshots(), key=lambda s: s.timestamp_ms, reverse=True)[:limit]:
        summary = snap.summary
        rows.append({
            "snapshot_id": snap.snapshot_id,
            "committed_at": datetime.fromtimestamp(snap.timestamp_ms / 1000, UTC).isoformat(),
            "operation": str(summary.operation.value) if summary else "",
            "added_rows": int(summary.additional_properties.get("added-records", 0)) if summary else 0,
            "offsets": {f"{t}[{p}]": o for (t, p), o in snapshot_offsets(table, snap).items()},
        })  # fmt: skip
    if as_json:
        dump_json(rows)
        return
    out = RichTable(title=f"{table.name()} snapshots (newest first)")
    for col in ("snapshot_id", "committed_at", "operation", "added_rows", "offsets"):
        out.add_column(col)
    for r in rows:
        out.add_row(
            *(str(r[c]) for c in ("snapshot_id", "committed_at", "operation", "added_rows", "offsets"))
        )
    context.console.print(out)


@app.command()
@handle_errors
def compact(ctx: typer.Context, name: str = _TABLE) -> None:
    """Rewrite small files into large sorted ones per partition (results unchanged)."""
    from k2.cli.progress import progress
    from k2.lake import load_table, open_catalog
    from k2.lake import maintenance as mx

    context = obj(ctx)
    table = load_table(open_catalog(context.settings), context.settings.lake.namespace, _check(name))
    with progress(context.err, f"compact {name}", None) as advance:
        result = mx.compact(table, on_bin=lambda done, bins: advance(done, f"of {bins} partitions rewritten"))
    context.console.print(
        f"{name}: {result.partitions} partitions, {result.files_before} files -> {result.files_after}, "
        f"{result.rows:,} rows rewritten"
    )


@app.command()
@handle_errors
def expire(
    ctx: typer.Context,
    name: str = _TABLE,
    older_than: float | None = typer.Option(
        None,
        "--older-than",
        help="Hours; default: the configured time-travel window (lake.time_travel_hours).",
    ),
    keep_last: int | None = typer.Option(
        None, help="Always keep this many newest (default lake.keep_snapshots)."
    ),
    orphans: bool = typer.Option(True, help="Also delete files no snapshot references any more."),
) -> None:
    """Expire snapshots beyond the time-travel window; the current snapshot is always kept."""
    from k2.cli.progress import progress
    from k2.lake import load_table, open_catalog
    from k2.lake import maintenance as mx

    context = obj(ctx)
    lake = context.settings.lake
    table = load_table(open_catalog(context.settings), lake.namespace, _check(name))
    hours = lake.time_travel_hours if older_than is None else older_than
    with progress(context.err, f"expire {name}", 2 if orphans else 1) as advance:
        advance(0, "expiring snapshots")
        n = mx.expire_snapshots(
            table, older_than=timedelta(hours=hours), keep_last=keep_last or lake.keep_snapshots
        )
        if orphans:
            advance(1, "deleting orphan files")
            removed = mx.remove_orphan_files(table)
        advance(2 if orphans else 1, "done")
    context.console.print(f"{name}: expired {n} snapshots older than {hours:g} h")
    if orphans:
        context.console.print(f"{name}: removed {len(removed)} orphan files")


@app.command("rewrite-manifests")
@handle_errors
def rewrite_manifests(ctx: typer.Context, name: str = _TABLE) -> None:
    """Merge the current snapshot's manifests (speeds up query planning)."""
    from k2.lake import load_table, open_catalog
    from k2.lake import maintenance as mx

    context = obj(ctx)
    table = load_table(open_catalog(context.settings), context.settings.lake.namespace, _check(name))
    before, after = mx.rewrite_manifests(table)
    context.console.print(f"{name}: manifests {before} -> {after}")


@app.command()
@handle_errors
def maintain(
    ctx: typer.Context,
    every: float | None = typer.Option(
        None, "--every", min=0.1, help="Seconds between passes, forever (default: one pass, then exit)."
    ),
) -> None:
    """Compact, thin snapshots to checkpoints, merge manifests and delete orphans on every table.

    `k2 ingest` already does this every lake.maintain_every_s; run this beside an ingester that has
    it switched off, or on tables written by something else. Safe while ingest and queries run.
    """
    import time

    from k2.lake import load_table, open_catalog
    from k2.pipeline.upkeep import Upkeep

    context = obj(ctx)
    lake = context.settings.lake
    catalog = open_catalog(context.settings)
    upkeep = Upkeep(lake, [load_table(catalog, lake.namespace, name) for name in TABLES])
    while True:
        began = time.monotonic()
        upkeep.run()
        context.console.print(f"maintenance pass {upkeep.passes} took {time.monotonic() - began:.1f} s")
        if every is None:
            return
        time.sleep(max(0.0, every - (time.monotonic() - began)))
