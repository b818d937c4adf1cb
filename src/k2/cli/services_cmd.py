"""``k2 services``: the local Kafka broker, Redis server, PostgreSQL catalog, S3 server and API proxy that K2 runs for you."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from k2.cli.context import Context, dump_json, handle_errors, obj

if TYPE_CHECKING:  # the launcher imports Kafka's admin client and psutil
    from k2.services import Launcher, ServiceStatus

__all__ = ["app"]

app = typer.Typer(
    help=(
        "Run the local services: Apache Kafka (KRaft, jars fetched once with Maven), redis-server, "
        "PostgreSQL for the Iceberg catalog (Debian's postgresql) and, for a warehouse on s3://, an S3 "
        "server (SeaweedFS, built once with Go), and by name a reverse proxy (Debian's nginx) in front of "
        "several `k2 serve` replicas. Nothing is started for a service configured as external."
    ),
    no_args_is_help=True,
)

_NAMES = typer.Argument(
    None,
    help="kafka, redis, postgres, s3 and/or proxy (default: kafka and redis, plus postgres when the catalog "
    "is on it, K2_LAKE__CATALOG=postgres, and s3 when the warehouse is on s3://; the proxy only by name, "
    "with K2_PROXY__UPSTREAMS; `down` stops them all).",
)
_STYLE = {"running": "green", "external": "green", "stopped": "dim", "stale": "yellow",
          "unhealthy": "red", "unreachable": "red"}  # fmt: skip


def _launcher(context: Context) -> Launcher:
    from k2.services import Launcher

    return Launcher(context.settings)


def _table(statuses: list[ServiceStatus]) -> Table:
    table = Table()
    for col in ("service", "state", "address", "pid", "version", "detail"):
        table.add_column(col)
    for s in statuses:
        style = _STYLE.get(s.state, "")
        table.add_row(
            s.name, f"[{style}]{s.state}[/]", s.address, str(s.pid or "-"), s.version or "-", s.detail
        )
    return table


@app.command()
@handle_errors
def up(
    ctx: typer.Context,
    names: list[str] | None = _NAMES,
    timeout: float = typer.Option(120.0, help="Seconds to wait for each service to be ready."),
    brokers: int | None = typer.Option(
        None,
        min=1,
        max=5,
        help="Run Kafka as a KRaft cluster of this many nodes (3: replication 3, min.insync.replicas 2). "
        "Other commands learn it from K2_KAFKA__BROKERS (or kafka.brokers in k2.toml).",
    ),
) -> None:
    """Start the services (a second call is harmless) and wait until each answers a real request.

    A node of a cluster that died is started again; the others keep serving meanwhile.
    """
    context = obj(ctx)
    if brokers is not None and brokers != context.settings.kafka.brokers:
        from k2.config import derive

        context.settings = derive(context.settings, kafka={"brokers": brokers})
        context.err.print(
            f"[yellow]kafka.brokers is {brokers} for this command only[/]: set K2_KAFKA__BROKERS={brokers} "
            "so that the other commands (and `k2 services status`) know the cluster"
        )
    launcher = _launcher(context)
    start = time.perf_counter()
    with context.err.status(
        "starting services (the first start fetches the Kafka jars with Maven, and builds the S3 server with Go)…"
    ):
        statuses = launcher.up(names, timeout_s=timeout)
    context.console.print(_table(statuses))
    context.console.print(f"ready in {time.perf_counter() - start:.1f}s")


@app.command()
@handle_errors
def down(ctx: typer.Context, names: list[str] | None = _NAMES) -> None:
    """Stop the services that K2 started, by their recorded pid."""
    context = obj(ctx)
    context.console.print(_table(_launcher(context).down(names)))


@app.command()
@handle_errors
def status(
    ctx: typer.Context,
    names: list[str] | None = _NAMES,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show each service's state, address, pid and version; exit 1 if any is not healthy."""
    context = obj(ctx)
    statuses = _launcher(context).status(names)
    if as_json:
        dump_json([{**s.__dict__, "healthy": s.healthy} for s in statuses])
    else:
        context.console.print(_table(statuses))
    if not all(s.healthy for s in statuses):
        raise typer.Exit(1)


@app.command()
@handle_errors
def logs(
    ctx: typer.Context,
    name: str = typer.Argument(
        ..., help="kafka, redis, postgres, s3 or proxy (its error log; requests: services/proxy/access.log)."
    ),
    lines: int = typer.Option(50, "--lines", "-n", min=1, help="How many lines from the end."),
) -> None:
    """Print the tail of a service's log."""
    typer.echo(_launcher(obj(ctx)).logs(name, lines))
