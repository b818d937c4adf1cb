"""``k2 query recent`` and ``k2 query watch``: the live edge of the data from the terminal.

``recent`` answers like ``GET /v1/trades/recent``: Iceberg at its latest snapshot plus the Kafka
tail from that snapshot's offsets, with the boundary printed under the table. ``watch`` follows
symbols and prints each new tick (and the 1-minute bar it updates) as it reaches Kafka, until
Ctrl-C. ``k2.cli.app`` registers both under ``k2 query``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table as RichTable

from k2.cli.context import Context, handle_errors, obj
from k2.cli.query_cmd import cli_limits
from k2.types import TICK_KINDS

if TYPE_CHECKING:  # Kafka, Polars and the query engine load when a command runs
    from k2.hybrid import HybridEngine, HybridResult
    from k2.hybrid.live import LiveEvent

__all__ = ["recent", "watch"]

SHOWN_ROWS = 40


def _hybrid(context: Context, *, refresh_interval_s: float) -> HybridEngine:
    from k2.hybrid import HybridEngine
    from k2.query.engine import QueryEngine

    settings = context.settings
    engine = QueryEngine.from_settings(settings, refresh_interval_s=refresh_interval_s).with_limits(
        cli_limits()
    )
    return HybridEngine(settings, engine, hybrid=settings.hybrid)


def _caption(result: HybridResult) -> str:
    meta = result.meta()
    tail = ", ".join(
        f"p{t['partition']} {t['start']}→{t['end']}" for t in meta["tail"] if t["end"] > t["start"]
    )
    parts = [
        f"{result.boundary.table} snapshot {meta['snapshot_id']}",
        f"{result.history_rows:,} from Iceberg, {result.tail_rows:,} from the Kafka tail"
        + (f" ({tail})" if tail else ""),
    ]
    if result.duplicates:
        parts.append(f"{result.duplicates:,} duplicates dropped")
    if result.truncated:
        parts.append(f"TRUNCATED: {result.truncated_reason}")
    return "; ".join(parts)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return str(value.isoformat()) if hasattr(value, "isoformat") else str(value)


@handle_errors
def recent(
    ctx: typer.Context,
    symbol: str = typer.Argument(..., help="Symbol (or comma-separated symbols), e.g. BHP."),
    minutes: float = typer.Option(15.0, "--minutes", "-m", help="Window length in minutes."),
    kind: str = typer.Option("trades", "--kind", "-k", help="trades or quotes."),
    until: str | None = typer.Option(None, help="Window end (ISO 8601); default: see --anchor."),
    anchor: str = typer.Option("latest", help="latest: end at the newest tick; now: end now."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write a .parquet/.csv/.json/.arrow file."
    ),
) -> None:
    """The last minutes of ticks, committed or not: Iceberg at S plus Kafka from S's offsets."""
    from k2.query.errors import InvalidParameterError
    from k2.query.formats import write_file
    from k2.query.params import parse_symbols, parse_time

    if kind not in TICK_KINDS:
        raise InvalidParameterError("kind", f"{kind!r} is not a kind; use trades or quotes")
    if anchor not in ("latest", "now"):
        raise InvalidParameterError("anchor", f"{anchor!r}: use latest or now")
    context = obj(ctx)
    hybrid = _hybrid(context, refresh_interval_s=0)
    try:
        result = hybrid.recent(
            kind,  # type: ignore[arg-type]
            parse_symbols(symbol, name="symbol"),
            minutes,
            until=parse_time(until, "until") if until else None,
            anchor=anchor,  # type: ignore[arg-type]
        )
    finally:
        hybrid.close()
        hybrid.engine.close()
    if output is not None:
        fmt = write_file(result.table(), output, result.meta())
        context.console.print(f"wrote {result.rows.height:,} rows to {output} ({fmt}); {_caption(result)}")
        return
    rows = result.rows
    title = (
        f"{kind} {result.window.start.isoformat()} → {result.window.end.isoformat()} — {rows.height:,} rows"
    )
    table = RichTable(title=title, caption=_caption(result))
    shown = [c for c in rows.columns if c not in ("message_id", "ingest_ts", "kafka_offset")]
    for name in shown:
        table.add_column(name, overflow="fold")
    for row in rows.tail(SHOWN_ROWS).select(shown).iter_rows():
        table.add_row(*(_cell(v) for v in row))
    context.console.print(table)
    if rows.height > SHOWN_ROWS:
        context.console.print(
            f"(the last {SHOWN_ROWS} of {rows.height:,} rows; use --output to get them all)"
        )


def _line(event: LiveEvent) -> list[str]:
    """Printable lines of one live event."""
    if event.rows is None:
        status = event.status
        if "views" in status:
            return [
                f"[dim]watching {', '.join(status['subscribed'])} ({', '.join(status['kinds'])}) "
                f"from {v['kind']} snapshot {v['snapshot_id']}[/]"
                for v in status["views"]
            ]
        reason = status.get("truncated_reason")
        return [f"[yellow]tail truncated: {reason}[/]" if reason else "[dim]tail complete again[/]"]
    rows = event.rows
    out = []
    for r in rows.iter_rows(named=True):
        if event.kind == "trade":
            out.append(
                f"{_ts(r['exchange_ts'])} [bold]{r['symbol']}[/] trade {r['price']} x {r['size']} #{r['sequence']}"
            )
        elif event.kind == "quote":
            out.append(
                f"{_ts(r['exchange_ts'])} [bold]{r['symbol']}[/] quote {r['bid_size']} @ {r['bid_price']} / "
                f"{r['ask_price']} x {r['ask_size']} #{r['sequence']}"
            )
        else:
            out.append(
                f"[cyan]bar {r['symbol']} {_ts(r['start'])} O {r['open']} H {r['high']} L {r['low']} "
                f"C {r['close']} V {r['volume']} ({r['trades']} trades, {r['uncommitted']} uncommitted)[/]"
            )
    return out


def _ts(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S.%f") if hasattr(value, "strftime") else str(value)


@handle_errors
def watch(
    ctx: typer.Context,
    symbol: str = typer.Argument(..., help="Symbol (or comma-separated symbols) to follow."),
    kinds: str = typer.Option("trades,quotes", help="trades, quotes or both."),
    bars: bool = typer.Option(True, help="Also print the 1-minute bar each trade updates."),
    duration: float | None = typer.Option(None, help="Stop after this many seconds (default: Ctrl-C)."),
) -> None:
    """Print ticks of the symbols as they reach Kafka (deduplicated as the pipeline does); Ctrl-C stops."""
    from k2.hybrid.live import LiveSubscription
    from k2.query.errors import InvalidParameterError
    from k2.query.params import parse_symbols

    chosen = tuple(k.strip() for k in kinds.split(",") if k.strip())
    if not chosen or any(k not in TICK_KINDS for k in chosen):
        raise InvalidParameterError("kinds", f"{kinds!r}: use trades, quotes or trades,quotes")
    context = obj(ctx)
    hybrid = _hybrid(context, refresh_interval_s=1.0)
    sub = LiveSubscription(hybrid, chosen, parse_symbols(symbol, name="symbol"), bars=bars)  # type: ignore[arg-type]
    try:
        for event in sub.stream(duration_s=duration):
            for line in _line(event):
                context.console.print(line, highlight=False)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how watching ends: not an error
    finally:
        hybrid.close()
        hybrid.engine.close()
    context.err.print(f"[dim]{sub.emitted:,} ticks shown[/]")
