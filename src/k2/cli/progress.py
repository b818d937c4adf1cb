"""Progress for long CLI work: a rich bar on a terminal, a plain line now and then elsewhere.

A log file or a CI job must not fill with cursor movements, so off a terminal the same updates
become ordinary lines, at most one every ``every_s`` seconds plus the last one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["Advance", "progress"]

#: ``advance(completed, detail)``: the work done so far (absolute) and a short text beside the bar.
Advance = Callable[[float, str], None]


@contextmanager
def progress(
    console: Console, label: str, total: float | None, *, every_s: float = 5.0, unit: str = ""
) -> Iterator[Advance]:
    """Show ``label``'s progress towards ``total`` (None: unknown, a spinner) while the block runs."""
    if console.is_terminal:
        columns = [SpinnerColumn(), TextColumn("[bold]{task.description}")]
        if total is not None:
            columns += [BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
        else:
            columns += [TextColumn("{task.completed:,.0f}" + unit.replace("[", r"\["))]
        columns += [TextColumn("{task.fields[detail]}"), TimeElapsedColumn()]
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task(label, total=total, detail="")

            def advance(completed: float, detail: str = "") -> None:
                bar.update(task, completed=completed, detail=detail)

            yield advance
        return
    shown: list[tuple[float, float, str]] = [(float("-inf"), -1.0, "")]  # the first update shows

    def line(completed: float, detail: str, *, force: bool = False) -> None:
        now = time.monotonic()
        at, was, said = shown[0]
        if not force and now - at < every_s:
            return
        if force and (completed, detail) == (was, said):
            return
        shown[0] = (now, completed, detail)
        of = f"/{total:,.0f}" if total is not None else ""
        console.print(
            f"{label}: {completed:,.0f}{of}{unit} {detail}".rstrip(), highlight=False, soft_wrap=True
        )

    last: list[tuple[float, str]] = []

    def advance_plain(completed: float, detail: str = "") -> None:
        last[:] = [(completed, detail)]
        line(completed, detail)

    yield advance_plain
    if last:
        line(*last[0], force=True)
