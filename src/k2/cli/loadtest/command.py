"""``k2 load-test``: overload the pipeline on purpose and prove it degrades, recovers and loses nothing."""

from __future__ import annotations

import uuid

import typer

from k2.cli.context import handle_errors, obj

__all__ = ["load_test"]


@handle_errors
def load_test(
    ctx: typer.Context,
    multiple: float = typer.Option(10.0, help="Overload rate, as a multiple of the measured capacity."),
    overload: float = typer.Option(20.0, help="Seconds of overload."),
    normal: float = typer.Option(10.0, help="Seconds at the normal rate afterwards."),
    max_ticks: int = typer.Option(
        400_000,
        help="At most this many ticks in the overload phase; half are published before ingest starts.",
    ),
    calibrate: int = typer.Option(30_000, help="Ticks of the capacity measurement."),
) -> None:
    """Drive the simulator at MULTIPLE x capacity, then at a normal rate, while ingesting.

    Uses scratch topics and a scratch lake namespace (named in the output) on the configured
    services, so the real tables are untouched. Prints the level over time, the peak lag and the
    time to drain, then compares the tables with the simulator's ground truth. Exit code 1 if any
    tick was lost or duplicated, or a deferral gap was never back-filled.
    """
    from k2.cli.loadtest.run import LoadSample, run_load_test
    from k2.cli.progress import progress
    from k2.config import derive

    context = obj(ctx)
    tag = uuid.uuid4().hex[:8]
    settings = derive(
        context.settings,
        kafka={"topic_prefix": f"loadtest-{tag}."},
        lake={"namespace": f"loadtest_{tag}"},
        pipeline={"group_id": f"loadtest-{tag}", "instance_id": None},
    )
    console = context.console
    console.print(f"scratch topics [bold]loadtest-{tag}.*[/], namespace [bold]loadtest_{tag}[/]")
    last: list[str] = []
    advance = [lambda _done, _detail: None]

    def show(sample: LoadSample) -> None:
        advance[0](min(sample.t, overload + normal), f"{sample.phase} {sample.level} lag {sample.lag:,}")
        line = f"{sample.level:13} lag {sample.lag:>8,} deferred {sample.deferred:>8,} back-filled {sample.backfilled:>8,}"
        if not last or last[0] != line:
            console.print(f"{sample.t:5.1f}s {sample.phase:5} {line}", highlight=False, soft_wrap=True)
            last[:] = [line]

    console.print("measuring capacity, then overloading …")
    with progress(context.err, "load-test", overload + normal, every_s=15, unit=" s") as bar:
        advance[0] = bar
        result = run_load_test(
            settings, multiple=multiple, overload_s=overload, normal_s=normal, max_ticks=max_ticks,
            calibrate_ticks=calibrate, on_sample=show,
        )  # fmt: skip
    console.print(
        f"\ncapacity {result.capacity:,.0f} ticks/s, target {result.target_rate:,.0f}/s; "
        f"levels {' -> '.join(result.levels)}; peak lag {result.peak_lag:,}; "
        f"drained in {result.drain_s}s; deferred {result.deferred:,}, back-filled {result.backfilled:,}"
    )
    report = result.report
    assert report is not None
    if report.ok:
        console.print(
            f"[green]complete[/]: {sum(report.rows.values()):,} rows equal the {sum(report.expected_rows.values()):,} "
            f"ticks sent, none twice; {report.extra_gaps_recovered} deferral gaps all recovered"
        )
        return
    for problem in report.problems:
        console.print(f"[red]{problem}[/]")
    raise typer.Exit(1)
