"""``k2 query``: the query engine from the terminal, as a Rich table or into a file.

The same engine and the same validation as the API. Caps are looser than the API's (a local user
reading into a file is not a remote client): up to 10 M rows, a year of range, no timeout.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table as RichTable

from k2.cli.context import Context, handle_errors, obj

if TYPE_CHECKING:  # the engine's modules (DuckDB, pyiceberg, Arrow) load when a command runs
    from k2.query.engine import QueryEngine
    from k2.query.params import TimeTravel
    from k2.query.reader import QueryLimits, Result

__all__ = ["app"]

app = typer.Typer(help="Query the Iceberg tables (DuckDB): ticks, bars, as-of joins, snapshots, gaps.",
                  no_args_is_help=True)  # fmt: skip

SHOWN_ROWS = 40

_SYMBOLS = typer.Option(..., "--symbols", "-s", help="Comma-separated symbols, e.g. BHP,RIO.")
_START = typer.Option(..., "--start", help="ISO 8601 start (inclusive; no offset means UTC).")
_END = typer.Option(..., "--end", help="ISO 8601 end (exclusive).")
_SNAPSHOT = typer.Option(None, "--snapshot-id", help="Time travel: read this snapshot.")
_AS_OF = typer.Option(None, "--as-of", help="Time travel: read the tables as of this time.")
_OUTPUT = typer.Option(
    None, "--output", "-o", help="Write to a .parquet, .csv, .json or .arrow file instead."
)


def _engine(context: Context) -> QueryEngine:
    from k2.query.engine import QueryEngine

    return QueryEngine.from_settings(context.settings, refresh_interval_s=0).with_limits(cli_limits())


def cli_limits() -> QueryLimits:
    """The terminal's caps: up to 10 M rows, a year of range, no timeout."""
    from k2.query.reader import QueryLimits

    return QueryLimits(max_rows=10_000_000, max_range_days=366, timeout_s=None)


def _show(context: Context, result: Result, output: Path | None, title: str) -> None:
    """Print a Rich table (first rows) or write the whole result to ``output``."""
    from k2.query.formats import format_for_path, write_file

    table = result.table
    if output is not None:
        format_for_path(output)
        fmt = write_file(table, output, {"next_cursor": result.next_cursor, "snapshots": result.snapshots})
        context.console.print(f"wrote {table.num_rows:,} rows to {output} ({fmt})")
        return
    rich = RichTable(title=f"{title} — {table.num_rows:,} rows", caption=_caption(result))
    for name in table.column_names:
        rich.add_column(name, overflow="fold")
    for row in table.slice(0, SHOWN_ROWS).to_pylist():
        rich.add_row(*(_cell(v) for v in row.values()))
    context.console.print(rich)
    if table.num_rows > SHOWN_ROWS:
        context.console.print(f"… {table.num_rows - SHOWN_ROWS:,} more rows (use --output to get them all)")


def _caption(result: Result) -> str:
    parts = [f"{k} snapshot {v}" for k, v in result.snapshots.items()]
    if result.next_cursor:
        parts.append(f"next cursor: {result.next_cursor}")
    return "; ".join(parts)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return str(value)


def _travel(snapshot_id: int | None, as_of: str | None) -> TimeTravel:
    from k2.query.params import TimeTravel

    return TimeTravel.parse(snapshot_id, as_of)


def _ticks(ctx: typer.Context, kind: str, symbols: str, start: str, end: str, order: str, limit: int,
           cursor: str | None, snapshot_id: int | None, as_of: str | None, output: Path | None) -> None:  # fmt: skip
    from k2.query.params import parse_order, parse_symbols

    context = obj(ctx)
    engine = _engine(context)
    result = engine.ticks(
        kind,  # type: ignore[arg-type]
        parse_symbols(symbols),
        engine.window(start, end),
        order=parse_order(order),
        limit=limit,
        cursor=cursor,
        travel=_travel(snapshot_id, as_of),
    )
    _show(context, result, output, kind)


@app.command()
@handle_errors
def trades(
    ctx: typer.Context,
    symbols: str = _SYMBOLS,
    start: str = _START,
    end: str = _END,
    order: str = typer.Option("asc", help="asc (oldest first) or desc."),
    limit: int = typer.Option(1000, help="Rows (page size)."),
    cursor: str | None = typer.Option(None, help="Continue after a previous page's cursor."),
    snapshot_id: int | None = _SNAPSHOT,
    as_of: str | None = _AS_OF,
    output: Path | None = _OUTPUT,
) -> None:
    """Trades for symbols and a window."""
    _ticks(ctx, "trades", symbols, start, end, order, limit, cursor, snapshot_id, as_of, output)


@app.command()
@handle_errors
def quotes(
    ctx: typer.Context,
    symbols: str = _SYMBOLS,
    start: str = _START,
    end: str = _END,
    order: str = typer.Option("asc", help="asc (oldest first) or desc."),
    limit: int = typer.Option(1000, help="Rows (page size)."),
    cursor: str | None = typer.Option(None, help="Continue after a previous page's cursor."),
    snapshot_id: int | None = _SNAPSHOT,
    as_of: str | None = _AS_OF,
    output: Path | None = _OUTPUT,
) -> None:
    """Quotes for symbols and a window."""
    _ticks(ctx, "quotes", symbols, start, end, order, limit, cursor, snapshot_id, as_of, output)


@app.command()
@handle_errors
def bars(
    ctx: typer.Context,
    symbols: str = _SYMBOLS,
    start: str = _START,
    end: str = _END,
    interval: str = typer.Option("1m", "--interval", "-i", help="1s … 1d (1s, 1m, 15m, 1h, 1d)."),
    tz: str | None = typer.Option(None, help="Align to this zone's midnight instead of the exchange's."),
    snapshot_id: int | None = _SNAPSHOT,
    as_of: str | None = _AS_OF,
    output: Path | None = _OUTPUT,
) -> None:
    """OHLCV bars with VWAP and trade count, aligned to the exchange-local day."""
    from k2.query.bars import MAX_INTERVAL_US, MIN_INTERVAL_US
    from k2.query.params import parse_duration, parse_symbols, parse_timezone

    context = obj(ctx)
    engine = _engine(context)
    result = engine.bars(
        parse_symbols(symbols),
        engine.window(start, end),
        parse_duration(interval, "interval", minimum_us=MIN_INTERVAL_US, maximum_us=MAX_INTERVAL_US),
        tz=parse_timezone(tz) if tz else None,
        travel=_travel(snapshot_id, as_of),
    )
    _show(context, result, output, f"bars {interval}")


@app.command()
@handle_errors
def asof(
    ctx: typer.Context,
    symbols: str = _SYMBOLS,
    start: str = _START,
    end: str = _END,
    tolerance: str = typer.Option("5m", help="Older quotes count as stale (null)."),
    snapshot_id: int | None = _SNAPSHOT,
    as_of: str | None = _AS_OF,
    output: Path | None = _OUTPUT,
) -> None:
    """Each trade with the prevailing quote: bid, ask, mid, spread, quote age."""
    from k2.query.params import parse_duration, parse_symbols

    context = obj(ctx)
    engine = _engine(context)
    result = engine.trades_with_quotes(
        parse_symbols(symbols),
        engine.window(start, end),
        parse_duration(tolerance, "tolerance", minimum_us=1, maximum_us=86_400_000_000),
        travel=_travel(snapshot_id, as_of),
    )
    _show(context, result, output, "trades with quotes")


@app.command()
@handle_errors
def latest(
    ctx: typer.Context,
    symbols: str | None = typer.Option(None, "--symbols", "-s", help="Default: all symbols of the last day."),
    snapshot_id: int | None = _SNAPSHOT,
    as_of: str | None = _AS_OF,
    output: Path | None = _OUTPUT,
) -> None:
    """The last trade and quote of each symbol."""
    from k2.query.params import parse_symbols

    context = obj(ctx)
    result = _engine(context).latest(
        parse_symbols(symbols, required=False), travel=_travel(snapshot_id, as_of)
    )
    _show(context, result, output, "latest")


@app.command()
@handle_errors
def snapshots(
    ctx: typer.Context,
    table: str = typer.Argument("trades", help="trades, quotes, reference or sequence_gaps."),
    limit: int = typer.Option(20, help="Newest first; how many."),
    output: Path | None = _OUTPUT,
) -> None:
    """Snapshots with commit time, rows added and the Kafka offsets they cover."""
    import pyarrow as pa

    context = obj(ctx)
    result = _engine(context).snapshots(table, limit=limit)
    if output is None:
        offsets = [
            ", ".join(f"{o['topic']}[{o['partition']}]={o['offset']}" for o in row)
            for row in result.table["offsets"].to_pylist()
        ]
        result.table = result.table.set_column(
            result.table.schema.get_field_index("offsets"), "offsets", pa.array(offsets, pa.string())
        )
    _show(context, result, output, f"{table} snapshots")


@app.command()
@handle_errors
def gaps(
    ctx: typer.Context,
    symbols: str | None = typer.Option(None, "--symbols", "-s", help="Default: every symbol."),
    start: str | None = typer.Option(None, "--start", help="First session, YYYY-MM-DD."),
    end: str | None = typer.Option(None, "--end", help="Last session, YYYY-MM-DD."),
    status: str = typer.Option("all", help="open, recovered, pending (holes not recorded yet) or all."),
    output: Path | None = _OUTPUT,
) -> None:
    """Sequence gaps and whether late ticks recovered them."""
    from k2.query.params import parse_date, parse_symbols
    from k2.query.stats import SessionRange

    context = obj(ctx)
    if status not in ("open", "recovered", "pending", "all"):
        raise typer.BadParameter("use open, recovered, pending or all", param_hint="--status")
    sessions = SessionRange(
        parse_date(start, "start") if start else None, parse_date(end, "end") if end else None, max_days=None
    )
    result = _engine(context).gaps(parse_symbols(symbols, required=False), sessions, status=status)  # type: ignore[arg-type]
    _show(context, result, output, "gaps")
