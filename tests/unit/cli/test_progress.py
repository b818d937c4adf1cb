"""Progress: plain lines without control codes off a terminal, a live bar on one."""

from __future__ import annotations

import io

from rich.console import Console

from k2.cli.progress import progress


def test_off_a_terminal_progress_is_plain_lines_now_and_then_and_the_last_one() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=100)
    with progress(console, "simulate", 1_000, every_s=3600) as advance:
        for done in range(0, 1_001, 100):
            advance(done, f"{done} ticks")
    lines = out.getvalue().splitlines()
    assert lines == ["simulate: 0/1,000 0 ticks", "simulate: 1,000/1,000 1000 ticks"]
    assert "\x1b" not in out.getvalue()


def test_nothing_is_printed_off_a_terminal_when_nothing_advanced() -> None:
    out = io.StringIO()
    with progress(Console(file=out, force_terminal=False), "compact", None):
        pass
    assert out.getvalue() == ""


def test_on_a_terminal_progress_draws_a_bar() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100)
    with progress(console, "asx", 10) as advance:
        advance(5, "half")
    assert "\x1b" in out.getvalue()
