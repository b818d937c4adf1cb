"""``k2 demo``: K2's main job end to end, on the embedded defaults, checked against the truth.

It runs the same commands a user would (each is echoed), in a namespace and topic prefix of its
own so that a second demo never mixes with the first, and ends by comparing what landed in
Iceberg with the simulator's exact ground truth.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from k2.cli.context import Context, dispatch, handle_errors, obj
from k2.types import TICK_KINDS

__all__ = ["demo"]

# The feed reorders within 8 ticks and late fills come at least 19 behind; K2's reorder window sits
# between the two, so reordering is never a gap and a late fill always fills a recorded one.
REORDER_WINDOW = 16
_FAULTS = [
    "--gap-rate", "0.001", "--dup-rate", "0.01", "--reorder-rate", "0.01", "--reorder-window", "8",
    "--late-fill-fraction", "0.5", "--malformed-rate", "0.0005",
]  # fmt: skip


def _run(context: Context, args: list[str]) -> None:
    context.console.rule(f"[bold]$ k2 {' '.join(args)}")
    dispatch(context, args)


@handle_errors
def demo(
    ctx: typer.Context,
    ticks: int = typer.Option(200_000, min=1000, help="Simulated ticks to generate."),
    symbols: int = typer.Option(8, min=1, help="Simulated symbols."),
    seed: int = typer.Option(7, help="Simulator seed."),
    asx: Path | None = typer.Option(None, help="Also replay an ASX sample directory (see k2 feed asx)."),
) -> None:
    """Start the services, simulate a faulty feed, ingest it into Iceberg, and prove the result.

    Services stay up afterwards (stop them with `k2 services down`).
    """
    run = time.strftime("%Y%m%d%H%M%S")
    context = _demo_context(obj(ctx), run)
    workdir = context.settings.data_dir / "demo" / run
    workdir.mkdir(parents=True, exist_ok=True)
    truth_path = workdir / "truth.json"
    services = ["kafka", "redis"] if context.settings.state.backend == "redis" else ["kafka"]
    started = time.perf_counter()
    _run(context, ["services", "up", *services])
    _run(context, ["lake", "init"])
    _run(context, ["feed", "simulate", "--symbols", str(symbols), "--count", str(ticks), "--seed", str(seed),
                   *_FAULTS, "--truth", str(truth_path)])  # fmt: skip
    if asx is not None:
        _run(context, ["feed", "asx", str(asx)])
    _run(context, ["ingest", "--idle-timeout", "5"])
    _run(context, ["lake", "snapshots", "trades", "--limit", "3"])
    _verify(context, truth_path)
    context.console.print(
        f"\n[bold green]demo finished[/] in {time.perf_counter() - started:.0f}s — namespace demo{run}, "
        f"topics demo{run}.*\nnext: `k2 lake describe trades`, `k2 dlq list`, `k2 services down`"
    )


def _demo_context(context: Context, run: str) -> Context:
    """The caller's configuration (``--config``, environment), with a namespace and topics of this run's own.

    Every command the demo runs gets this Context, so none of them reads the configuration again.
    """
    from k2.config import derive

    settings = context.settings
    state = {} if "reorder_window" in settings.state.model_fields_set else {"reorder_window": REORDER_WINDOW}
    # a person watches the demo: gap events summarised, even when its output goes to a file
    # (K2_LOG__GAP_LINES=each keeps every line)
    log = {} if "gap_lines" in settings.log.model_fields_set else {"gap_lines": "summary"}
    demo = derive(
        settings,
        kafka={"topic_prefix": f"demo{run}."},
        lake={"namespace": f"demo{run}"},
        state=state,
        log=log,
    )
    if log:
        from k2.observability.logging import configure_logging

        configure_logging(demo.log)
    return Context(settings=demo, console=context.console, err=context.err)


def _verify(context: Context, truth_path: Path) -> None:
    """Compare Iceberg with the simulator's truth: every unique tick once, every gap found."""
    import polars as pl

    from k2.lake import open_catalog

    settings = context.settings
    truth: dict[str, Any] = json.loads(truth_path.read_text())
    catalog = open_catalog(settings)
    ns = settings.lake.namespace
    table = Table(title="Iceberg against the simulator's ground truth")
    for col in ("", "truth", "K2", "match"):
        table.add_column(col)
    gaps = pl.from_arrow(catalog.load_table(f"{ns}.sequence_gaps").scan().to_arrow())
    assert isinstance(gaps, pl.DataFrame)
    all_ok = True
    for kind in TICK_KINDS:
        k = truth["kinds"][kind]
        rows = pl.from_arrow(
            catalog.load_table(f"{ns}.{kind}").scan(selected_fields=("message_id", "exchange")).to_arrow()
        )
        assert isinstance(rows, pl.DataFrame)
        sim_rows = rows.filter(pl.col("exchange") == "SIM")
        # Every hole becomes a recorded gap: by the tick bound, by the time bound on the exchange
        # clock, or (the feed's last `reorder_timeout` seconds) by wall time while the ingest idles
        # for longer than that (`--idle-timeout 5` above; docs/state.md, "The wall-clock fallback").
        due = list(k["gaps"])
        opened = gaps.filter((pl.col("kind") == kind) & (pl.col("event") == "opened"))
        recovered = gaps.filter((pl.col("kind") == kind) & (pl.col("event") == "recovered"))
        found = {
            f"{kind}: unique ticks": (len(k["sent_ids"]), sim_rows["message_id"].n_unique()),
            f"{kind}: rows (each tick once)": (len(k["sent_ids"]), sim_rows.height),
            f"{kind}: gaps recorded": (len(due), opened.height),
            f"{kind}: gaps recovered by late fills": (sum(1 for g in due if g["filled"]), recovered.height),
        }
        for label, (want, got) in found.items():
            ok = want == got
            all_ok &= ok
            table.add_row(label, f"{want:,}", f"{got:,}", "[green]yes[/]" if ok else "[red]no[/]")
    context.console.print(table)
    if not all_ok:
        raise typer.Exit(1)
