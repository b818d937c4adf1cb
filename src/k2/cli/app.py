"""The root ``k2`` command: records its options and hands them to sub-commands.

Only Typer, Rich and the command modules are imported here, and each command module imports its
heavy parts (pyiceberg, DuckDB, Polars, Kafka, FastAPI) inside the command, so ``k2 --help`` and
``k2 <cmd> --help`` start in a fraction of a second (tests/unit/cli/test_app.py holds this).
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from k2.cli import (
    config_cmd,
    cost_cmd,
    demo_cmd,
    dlq_cmd,
    feed_cmd,
    ingest_cmd,
    lake_cmd,
    query_cmd,
    recent_cmd,
    serve_cmd,
    services_cmd,
    status_cmd,
)
from k2.cli.context import Context, Root
from k2.cli.loadtest import command as loadtest_cmd

__all__ = ["app", "main"]

app = typer.Typer(
    name="k2",
    help=(
        "K2 — a market-data lakehouse: ticks from feeds through Kafka into Iceberg, checked for gaps "
        "and duplicates on the way, queried with DuckDB. An analytics platform (sub-second), "
        "not an execution system (microseconds)."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
app.add_typer(services_cmd.app, name="services")
app.add_typer(config_cmd.app, name="config")
app.add_typer(feed_cmd.app, name="feed")
app.add_typer(lake_cmd.app, name="lake")
app.add_typer(dlq_cmd.app, name="dlq")
query_cmd.app.command("recent")(recent_cmd.recent)
query_cmd.app.command("watch")(recent_cmd.watch)
app.add_typer(query_cmd.app, name="query")
app.command("serve")(serve_cmd.serve)
app.command("ingest")(ingest_cmd.ingest)
app.command("demo")(demo_cmd.demo)
app.command("status")(status_cmd.status)
app.command("load-test")(loadtest_cmd.load_test)
app.command("cost")(cost_cmd.cost)


@app.callback()
def _root(
    ctx: typer.Context,
    config: Path | None = typer.Option(
        None,
        "--config",
        "-c",
        envvar="K2_CONFIG",
        help="TOML configuration file (default: ./k2.toml if present).",
    ),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Log each gap event, not a per-symbol summary every 10 s."
    ),
) -> None:
    """Record the root options; the Settings are built when a command first asks (``obj``).

    A command re-run by another (``k2 demo``, through ``dispatch``) arrives with that command's
    Context already in ``ctx.obj``, and keeps it.
    """
    if isinstance(ctx.obj, Context):
        return
    ctx.obj = Root(config, verbose=verbose)


@app.command()
def version() -> None:
    """Print K2's version and those of the parts it is built on."""
    import confluent_kafka
    import duckdb
    import pyiceberg

    from k2 import __version__

    typer.echo(f"k2 {__version__}")
    typer.echo(
        f"pyiceberg {pyiceberg.__version__}, duckdb {duckdb.__version__}, "
        f"confluent-kafka {confluent_kafka.version()[0]} (librdkafka {confluent_kafka.libversion()[0]})"
    )


def main() -> None:
    # Polars reports a corrupt Avro payload as a Rust panic (caught, and the payload dead-lettered);
    # with RUST_BACKTRACE=1 in the environment each one would print a 100-line backtrace.
    os.environ["RUST_BACKTRACE"] = "0"
    app()
