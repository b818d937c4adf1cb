"""The demo's chapter runner: every chapter ends with a check, and any failure fails the demo."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from k2.cli.app import app
from k2.cli.demo.runner import Chapter, Narrator, run_chapters, summary


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=120, force_terminal=False), out


def _passes(stage: Narrator) -> None:
    stage.say("something shown")
    stage.check("it holds", True, "1 = 1")


def _fails(stage: Narrator) -> None:
    stage.check("it holds", True)
    stage.check("it also holds", False, "1 != 2")


def _raises(stage: Narrator) -> None:
    raise RuntimeError("the broker went away")


def _silent(stage: Narrator) -> None:
    stage.say("shown, but never checked")


def test_a_run_with_every_check_passing_passes() -> None:
    console, out = _console()
    narrator = Narrator(console)
    results = run_chapters(
        narrator, [Chapter("One", "first", _passes), Chapter("Two", "second", _passes)], narrator
    )
    assert [r.ok for r in results] == [True, True]
    assert summary(console, results)
    assert "PASS it holds" in out.getvalue() and "\x1b[" not in out.getvalue()


@pytest.mark.parametrize("bad", [_fails, _raises, _silent], ids=["failed check", "raised", "no check"])
def test_a_failing_raising_or_unchecked_chapter_fails_the_run_and_the_rest_still_runs(bad: object) -> None:
    console, out = _console()
    narrator = Narrator(console)
    chapters = [
        Chapter("Good", "first", _passes),
        Chapter("Bad", "second", bad),
        Chapter("After", "third", _passes),
    ]  # type: ignore[arg-type]
    results = run_chapters(narrator, chapters, narrator)
    assert [r.ok for r in results] == [True, False, True]
    assert not summary(console, results)
    text = out.getvalue()
    assert "FAIL" in text and "Bad" in text and "After" in text


def test_pauses_come_between_chapters() -> None:
    console, _ = _console()
    narrator = Narrator(console)
    paused: list[str] = []
    chapters = [Chapter(n, n, _passes) for n in ("A", "B", "C")]
    run_chapters(narrator, chapters, narrator, pause=lambda c: paused.append(c.name))
    assert paused == ["B", "C"]


def test_k2_demo_exits_non_zero_when_a_chapter_check_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from k2.cli.demo import chapters

    def fails(stage: object) -> None:
        stage.check("a number from the system", False, "41 != 42")  # type: ignore[attr-defined]

    def passes(stage: object) -> None:
        stage.check("fine", True)  # type: ignore[attr-defined]

    monkeypatch.setenv("K2_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(
        chapters, "CHAPTERS", [Chapter("Fine", "ok", passes), Chapter("Broken", "not ok", fails)]
    )
    result = CliRunner().invoke(app, ["demo", "--fast"])
    assert result.exit_code == 1, result.output
    assert "FAIL a number from the system" in result.output and "demo FAILED" in result.output

    monkeypatch.setattr(chapters, "CHAPTERS", [Chapter("Fine", "ok", passes)])
    result = CliRunner().invoke(app, ["demo", "--fast"])
    assert result.exit_code == 0, result.output
