"""``k2 feed``: send ticks to Kafka from the market simulator or from the ASX sample.

Both commands create the topics if needed, produce through :class:`k2.stream.producer.TickProducer`
(batched, key = symbol), show progress on stderr and print a summary. The first Ctrl-C stops after
the batch in hand and flushes everything accepted; a second one abandons the batch.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from k2.cli.context import dump_json, handle_errors, obj

if TYPE_CHECKING:
    from k2.feeds.publish import FeedCounts
    from k2.feeds.runner import RunReport

__all__ = ["app"]

app = typer.Typer(
    help="Send ticks to Kafka: the market simulator (exact fault injection) or the ASX CSV sample replay.",
    no_args_is_help=True,
)


def _parse_date(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value.strip())
    except ValueError as exc:
        raise typer.BadParameter(f"not an ISO date (YYYY-MM-DD): {value!r}", param_hint=option) from exc


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


@contextmanager
def _interruptible(err: Console) -> Iterator[threading.Event]:
    """A stop event set by the first Ctrl-C; the second raises KeyboardInterrupt as usual."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        err.print("[yellow]stopping after the batch in hand (Ctrl-C again to abandon it)…[/]")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def _progress(err: Console, label: str, total: int | None) -> Iterator[Callable[[FeedCounts, float], None]]:
    """A bar of ticks sent towards ``total`` with the rate, malformed payloads and dead letters
    (plain lines every few seconds when stderr is not a terminal)."""
    from k2.cli.progress import progress

    with progress(err, label, total) as advance:
        shown = [-1.0]

        def update(counts: FeedCounts, elapsed: float) -> None:
            if elapsed - shown[0] < 0.2:
                return
            shown[0] = elapsed
            rate = counts.ticks / elapsed if elapsed > 0 else 0.0
            advance(
                counts.ticks, f"ticks  {rate:,.0f}/s  malformed {counts.raw:,}  dlq {counts.dead_letters:,}"
            )

        yield update


def _summary(
    console: Console, title: str, counts: FeedCounts, report: RunReport, extra: dict[str, Any]
) -> None:
    table = Table(title=title, show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for name, value in (
        ("trades", counts.trades),
        ("quotes", counts.quotes),
        ("malformed payloads", counts.raw),
        ("dead letters", counts.dead_letters),
        ("reference rows", counts.reference),
        ("messages", counts.total),
    ):
        table.add_row(name, f"{value:,}")
    table.add_row("elapsed", f"{report.elapsed_s:.1f} s")
    table.add_row("rate", f"{report.rate:,.0f} msg/s")
    for name, value in extra.items():
        table.add_row(name, str(value))
    if report.stopped:
        table.add_row("stopped", "on request")
    console.print(table)


def _summary_data(counts: FeedCounts, report: RunReport, extra: dict[str, Any]) -> dict[str, Any]:
    return {
        "trades": counts.trades,
        "quotes": counts.quotes,
        "malformed": counts.raw,
        "dead_letters": counts.dead_letters,
        "reference": counts.reference,
        "messages": counts.total,
        "elapsed_s": round(report.elapsed_s, 3),
        "stopped": report.stopped,
        **extra,
    }


@app.command()
@handle_errors
def simulate(
    ctx: typer.Context,
    symbols: str = typer.Option("10", help="How many symbols, or a comma-separated list of tickers."),
    seed: int = typer.Option(0, help="Same seed and options: same ticks, same faults, same truth."),
    rate: float | None = typer.Option(None, min=1, help="Messages per second; default: as fast as possible."),
    count: int | None = typer.Option(
        None, min=1, help="Ticks to generate (default: until --duration or Ctrl-C)."
    ),
    duration: float | None = typer.Option(
        None, min=0, help="Wall-clock seconds to run, checked between batches."
    ),
    start: str = typer.Option("2024-01-02", help="First trading date (ISO); SIM trades 10:00-16:00 UTC."),
    tick_rate: float = typer.Option(
        2.0, min=0.001, help="Mean simulated ticks per symbol per trading second."
    ),
    liquidity: str = typer.Option(
        "lognormal",
        help="How activity spreads over symbols: 'lognormal' (within ~x5 of the mean) or 'zipf' (a few "
        "busy symbols, most quiet, as on a real exchange; --tick-rate is then the mean).",
    ),
    zipf_exponent: float = typer.Option(1.1, help="With --liquidity zipf: weight = 1 / rank ** this."),
    gap_rate: float = typer.Option(0.0, help="Probability per tick of starting a gap (dropped sequences)."),
    gap_max_len: int = typer.Option(3, min=1, help="Longest gap, in ticks."),
    dup_rate: float = typer.Option(0.0, help="Probability per tick of being sent twice."),
    reorder_rate: float = typer.Option(
        0.0, help="Probability per tick of being delivered late within the window."
    ),
    reorder_window: int = typer.Option(8, min=1, help="W: a reordered tick arrives at most W ticks late."),
    reorder_max_s: float = typer.Option(
        1.0,
        min=0.000001,
        help="...and at most this many exchange-time seconds late (below state.reorder_timeout).",
    ),
    reset_rate: float = typer.Option(0.0, help="Probability per tick of a session reset of its symbol."),
    late_fill_fraction: float = typer.Option(
        0.0, help="Fraction of gaps whose ticks are sent later (> W+10)."
    ),
    malformed_rate: float = typer.Option(0.0, help="Malformed payloads per tick, put on the tick topics."),
    truth: Path | None = typer.Option(None, help="Write the ground truth (JSON) here."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Run the market simulator into Kafka, with fault injection and an exact ground truth."""
    from k2.feeds.errors import FeedConfigError
    from k2.feeds.faults import FaultConfig
    from k2.feeds.market import MarketConfig, symbol_names
    from k2.feeds.publish import FeedPublisher
    from k2.feeds.runner import run_simulation
    from k2.feeds.simulator import Simulator, SimulatorConfig
    from k2.stream.admin import ensure_topics
    from k2.stream.producer import TickProducer

    context = obj(ctx)
    names = tuple(_split(symbols))
    if len(names) == 1 and names[0].isdigit():
        names = symbol_names(int(names[0]), seed)
    try:
        # a paced feed generates in batches of about one second, so a stop never waits long
        chunk = 50_000 if rate is None else int(min(50_000, max(1_000, rate)))
        if liquidity not in ("lognormal", "zipf"):
            raise typer.BadParameter(
                f"choose lognormal or zipf (got {liquidity!r})", param_hint="--liquidity"
            )
        market = MarketConfig(
            symbols=names,
            start=_parse_date(start, "--start"),
            rate_per_symbol=tick_rate,
            chunk_ticks=chunk,
            liquidity="zipf" if liquidity == "zipf" else "lognormal",
            zipf_exponent=zipf_exponent,
        )
        faults = FaultConfig(
            gap_rate=gap_rate,
            gap_max_len=gap_max_len,
            dup_rate=dup_rate,
            reorder_rate=reorder_rate,
            reorder_window=reorder_window,
            reorder_max_s=reorder_max_s,
            reset_rate=reset_rate,
            late_fill_fraction=late_fill_fraction,
            malformed_rate=malformed_rate,
        )
    except FeedConfigError as exc:
        hint = "--" + exc.option.replace("_", "-")
        raise typer.BadParameter(f"{exc.reason} (got {exc.value!r})", param_hint=hint) from exc
    sim = Simulator(SimulatorConfig(market, faults, seed=seed), keep_truth=truth is not None)
    kafka = context.settings.kafka
    ensure_topics(kafka)
    producer = TickProducer(kafka)
    publisher = FeedPublisher(producer, kafka)
    try:
        with _interruptible(context.err) as stop, _progress(context.err, "simulate", count) as progress:
            report = run_simulation(
                sim, publisher, count=count, rate=rate, duration_s=duration, stop=stop, on_progress=progress
            )
    except KeyboardInterrupt:
        sim.truth.complete = False  # the batch in hand was cut: say so rather than mislead
        raise
    finally:
        try:
            producer.close()
        finally:
            if truth is not None:
                sim.write_truth(truth)
    extra: dict[str, Any] = {"symbols": len(names), "seed": seed}
    if truth is not None:
        extra["truth"] = str(truth)
    if as_json:
        dump_json(_summary_data(publisher.counts, report, extra))
    else:
        _summary(context.console, "k2 feed simulate", publisher.counts, report, extra)


@app.command()
@handle_errors
def asx(
    ctx: typer.Context,
    path: Path = typer.Argument(..., help="The ASX sample directory (trades/, quotes/, reference/)."),
    speed: float | None = typer.Option(None, min=0.001, help="Replay N times faster than exchange time."),
    as_fast_as_possible: bool = typer.Option(False, "--as-fast-as-possible", help="No pacing (the default)."),
    symbols: str | None = typer.Option(None, help="Comma-separated symbols to replay (default: all)."),
    days: str | None = typer.Option(None, help="Comma-separated trading days, ISO (default: all)."),
    max_idle: float | None = typer.Option(
        None, min=0, help="With --speed: cap quiet stretches to this many seconds."
    ),
    reference: bool = typer.Option(
        True, help="Also send instruments and corporate actions to the reference topic."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Replay the ASX CSV sample into Kafka in exchange-time order; malformed lines go to the DLQ."""
    from k2.feeds.asx import read_asx
    from k2.feeds.publish import FeedPublisher
    from k2.feeds.runner import run_replay
    from k2.stream.admin import ensure_topics
    from k2.stream.producer import TickProducer

    if speed is not None and as_fast_as_possible:
        raise typer.BadParameter("choose --speed or --as-fast-as-possible, not both", param_hint="--speed")
    context = obj(ctx)
    wanted = set(_split(symbols)) or None
    day_set = {_parse_date(d, "--days") for d in _split(days)} or None
    with context.err.status(f"reading {path}…"):
        replay = read_asx(path, symbols=wanted, days=day_set)
    kafka = context.settings.kafka
    ensure_topics(kafka)
    producer = TickProducer(kafka)
    publisher = FeedPublisher(producer, kafka)
    try:
        if reference and replay.reference is not None:
            keep = _symbol_filter(wanted)
            publisher.reference("instruments", replay.reference.instruments.filter(keep))
            publisher.reference("corporate_actions", replay.reference.corporate_actions.filter(keep))
        with (
            _interruptible(context.err) as stop,
            _progress(context.err, "asx", len(replay.delivery)) as progress,
        ):
            report = run_replay(
                replay, publisher, speed=speed, max_idle_s=max_idle, stop=stop, on_progress=progress
            )
    finally:
        producer.close()
    extra = {"files": str(path), "speed": "as fast as possible" if speed is None else f"x{speed:g}"}
    if as_json:
        dump_json(_summary_data(publisher.counts, report, extra))
    else:
        _summary(context.console, "k2 feed asx", publisher.counts, report, extra)


def _symbol_filter(wanted: set[str] | None) -> Any:
    """A Polars predicate keeping the wanted symbols (all when None)."""
    import polars as pl

    return pl.lit(True) if wanted is None else pl.col("symbol").is_in(sorted(wanted))
