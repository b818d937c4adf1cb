"""The chapter runner: narrates, pauses for the presenter, collects every check, judges the run.

A chapter is a function of the stage that prints what is being shown and ends with checks. The
runner never lets a chapter fail quietly: a chapter that raises, or that ran no check at all,
fails; the summary table lists each chapter, and ``failed`` decides the exit code.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from rich.console import Console
from rich.markup import escape
from rich.table import Table

__all__ = ["Chapter", "ChapterResult", "Check", "Narrator", "run_chapters", "summary"]

S = TypeVar("S")


@dataclass(frozen=True)
class Check:
    what: str
    ok: bool
    detail: str = ""


@dataclass
class ChapterResult:
    name: str
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.checks) and all(c.ok for c in self.checks)


@dataclass(frozen=True)
class Chapter(Generic[S]):
    """``run`` shows one part of K2 on the stage; ``title`` is the one line that says what it is."""

    name: str
    title: str
    run: Callable[[S], None]


class Narrator:
    """Prints the story one line per step, and records the checks of the chapter being told."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.current: ChapterResult | None = None

    def say(self, text: str) -> None:
        self.console.print(f"  {text}", highlight=False, soft_wrap=True)

    def check(self, what: str, ok: bool, detail: str = "") -> bool:
        """Record one check and print its verdict at once (a failure loudly, in red)."""
        if self.current is None:
            raise RuntimeError("a check outside a chapter")
        self.current.checks.append(Check(what, ok, detail))
        tail = f" [dim]({escape(detail)})[/]" if detail else ""
        if ok:
            self.console.print(f"  [green]PASS[/] {escape(what)}{tail}", highlight=False, soft_wrap=True)
        else:
            self.console.print(f"  [bold red]FAIL {escape(what)}[/]{tail}", highlight=False, soft_wrap=True)
        return ok


def run_chapters(
    narrator: Narrator,
    chapters: Sequence[Chapter[S]],
    stage: S,
    *,
    pause: Callable[[Chapter[S]], None] = lambda _c: None,
) -> list[ChapterResult]:
    """Tell every chapter in order (``pause`` runs before each but the first); a failure does not stop the rest."""
    console = narrator.console
    results: list[ChapterResult] = []
    for number, chapter in enumerate(chapters, 1):
        if number > 1:
            pause(chapter)
        result = narrator.current = ChapterResult(chapter.name)
        console.rule(f"[bold]{number}/{len(chapters)}  {chapter.name}[/]: {chapter.title}")
        began = time.monotonic()
        try:
            chapter.run(stage)
        except Exception as exc:
            result.error = f"{type(exc).__name__}: {exc}"
            console.print(f"  [bold red]FAIL the chapter raised {escape(result.error)}[/]", highlight=False)
            console.print(escape("".join(traceback.format_exception(exc)[-6:])), style="dim", highlight=False)
        if not result.checks and result.error is None:
            result.error = "no check ran"
            console.print("  [bold red]FAIL the chapter ran no check[/]")
        result.seconds = time.monotonic() - began
        results.append(result)
    narrator.current = None
    return results


def summary(console: Console, results: list[ChapterResult]) -> bool:
    """Print one row per chapter; True when every chapter passed."""
    table = Table(title="k2 demo: chapters")
    for col in ("#", "chapter", "checks", "seconds", "verdict"):
        table.add_column(col)
    for number, r in enumerate(results, 1):
        passed = sum(c.ok for c in r.checks)
        failed = [c.what for c in r.checks if not c.ok] + ([r.error] if r.error else [])
        verdict = "[green]pass[/]" if r.ok else f"[bold red]FAIL[/] {escape('; '.join(failed))}"
        table.add_row(str(number), r.name, f"{passed}/{len(r.checks)}", f"{r.seconds:.0f}", verdict)
    console.print(table)
    return all(r.ok for r in results)
