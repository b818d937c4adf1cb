"""``k2 demo``: K2 told in chapters on the running system, each ended by a check.

The chapters live in ``k2.cli.demo``; this module only reads the options, builds the stage (a
namespace and topic prefix of the run's own, so a second demo never mixes with the first), paces
the story for a presenter, and turns the chapters' checks into the exit code.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from k2.cli.context import Context, handle_errors, obj

if TYPE_CHECKING:
    from k2.cli.demo.runner import Chapter
    from k2.cli.demo.stage import Stage

__all__ = ["demo"]

# The feed reorders within 8 ticks and late fills come at least 19 behind; K2's reorder window sits
# between the two, so reordering is never a gap and a late fill always fills a recorded one.
REORDER_WINDOW = 16
ASX_SAMPLE = Path(__file__).resolve().parents[3] / "data" / "asx-2014-03"


@handle_errors
def demo(
    ctx: typer.Context,
    fast: bool = typer.Option(
        False, "--fast", help="No pauses and smaller feeds: a few minutes, unattended (CI)."
    ),
    pace: float = typer.Option(
        20.0, min=0, help="Seconds of pause between chapters (Enter skips one on a terminal)."
    ),
    asx: Path | None = typer.Option(
        None, help="The ASX sample directory to replay (default: the sample shipped in the repository)."
    ),
    chapters: str | None = typer.Option(
        None, help="Only these chapters, comma-separated names (they may need the ones before them)."
    ),
) -> None:
    """Show K2 end to end in ten chapters, each ended by a check; exit 1 if any check failed.

    Position, Ingest, Store, Monitor, Proof, Query, Backpressure, Resilience, Scale, Cost. Paced
    for a presenter by default (about 10 minutes); --fast runs the same steps in a few minutes.
    The demo serves the API (and its dashboard) while it runs; services stay up afterwards
    (stop them with `k2 services down`).
    """
    from k2.cli.demo.chapters import CHAPTERS
    from k2.cli.demo.runner import Narrator, run_chapters, summary
    from k2.cli.demo.stage import Stage

    root_config = ctx.find_root().params.get("config")
    run = time.strftime("%Y%m%d%H%M%S")
    verbose = bool(ctx.find_root().params.get("verbose"))
    context, derived = _demo_context(obj(ctx), run, verbose=verbose)
    workdir = context.settings.data_dir / "demo" / run
    workdir.mkdir(parents=True, exist_ok=True)
    sample = asx if asx is not None else (ASX_SAMPLE if ASX_SAMPLE.is_dir() else None)
    narrator = Narrator(context.console)
    stage = Stage(context, narrator, run, workdir, fast, derived, config_file=root_config, asx=sample)
    wanted = {c.strip().lower() for c in chapters.split(",")} if chapters else None
    told = [c for c in CHAPTERS if wanted is None or c.name.lower() in wanted]
    if not told:
        raise typer.BadParameter(f"none of {chapters!r}; chapters: {', '.join(c.name for c in CHAPTERS)}")
    console = context.console
    console.print(f"[bold]k2 demo[/] — namespace demo{run}, topics demo{run}.*, files in {workdir}")
    started = time.monotonic()
    try:
        results = run_chapters(narrator, told, stage, pause=_pauser(stage, 0.0 if fast else pace))
    finally:
        stage.stop_all()
    ok = summary(console, results)
    console.print(
        f"demo {'[green]passed[/]' if ok else '[bold red]FAILED[/]'} in {time.monotonic() - started:.0f}s; "
        "next: `k2 lake describe trades`, `k2 dlq list`, `k2 services down`"
    )
    if not ok:
        raise typer.Exit(1)


def _pauser(stage: Stage, seconds: float) -> Callable[[Chapter[Stage]], None]:
    """Wait ``seconds`` before a chapter (on a terminal, Enter cuts the wait short)."""
    import select
    import sys

    from k2.cli.progress import progress

    def pause(chapter: Chapter[Stage]) -> None:
        if seconds <= 0:
            return
        console = stage.context.console
        if not (console.is_terminal and sys.stdin.isatty()):
            console.print(f"  next: {chapter.name}, in {seconds:.0f} s", style="dim")
            time.sleep(seconds)
            return
        began = time.monotonic()
        with progress(console, f"next: {chapter.name} (Enter: now)", seconds) as advance:
            while (waited := time.monotonic() - began) < seconds:
                advance(waited, "")
                ready, _, _ = select.select([sys.stdin], [], [], 0.25)
                if ready:
                    sys.stdin.readline()
                    return

    return pause


def _demo_context(
    context: Context, run: str, *, verbose: bool = False
) -> tuple[Context, dict[str, dict[str, Any]]]:
    """The caller's configuration (``--config``, environment), with a namespace and topics of this run's own.

    Returns the sections it changed too: the ``k2`` processes the demo starts get them as ``K2_*``.
    """
    from k2.config import derive

    settings = context.settings
    derived: dict[str, dict[str, Any]] = {
        "kafka": {"topic_prefix": f"demo{run}."},
        "lake": {"namespace": f"demo{run}"},
        "pipeline": {"group_id": f"demo{run}"},
    }
    if "reorder_window" not in settings.state.model_fields_set:
        derived["state"] = {"reorder_window": REORDER_WINDOW}
    # a person watches the demo: gap events summarised, even when its output goes to a file
    # (K2_LOG__GAP_LINES=each keeps every line)
    log = {} if "gap_lines" in settings.log.model_fields_set else {"gap_lines": "summary"}
    if log:
        derived["log"] = log
    demo = derive(settings, **derived)
    from k2.observability.logging import configure_logging

    # The chapters narrate what the pipelines running in this process do; their own log lines
    # (warnings of the outages the demo causes on purpose) would bury the story: errors only,
    # unless -v. The k2 processes the demo starts log fully, to their files.
    configure_logging(demo.log if verbose else derive(demo, log={"level": "ERROR"}).log, verbose=verbose)
    return Context(settings=demo, console=context.console, err=context.err), derived
