"""``k2 feed`` refuses bad options before touching Kafka (no services needed)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from k2.cli import feed_cmd
from k2.config import LogSettings
from k2.observability.logging import configure_logging


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The root callback points structlog at CliRunner's captured stderr, closed after each invoke:
    point it back at the real one, or later tests that log fail with "I/O operation on closed file"."""
    yield
    configure_logging(LogSettings(), stream=sys.__stderr__)


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    from k2.cli.app import app as root

    if not any(group.name == "feed" for group in root.registered_groups):
        root.add_typer(feed_cmd.app, name="feed")
    return root


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["simulate", "--gap-rate", "0.7"], 2, "--gap-rate"),
        (["simulate", "--symbols", "0"], 2, "--symbols"),
        (["simulate", "--symbols", "AAA,AAA"], 2, "distinct"),
        (["simulate", "--start", "2024-13-01"], 2, "ISO date"),
        (["simulate", "--late-fill-fraction", "1.5"], 2, "--late-fill-fraction"),
        (["simulate", "--liquidity", "pareto"], 2, "lognormal or zipf"),
        (["simulate", "--liquidity", "zipf", "--zipf-exponent", "0"], 2, "--zipf-exponent"),
        (["asx", "{data}", "--speed", "2", "--as-fast-as-possible"], 2, "not both"),
        (["asx", "{data}", "--symbols", "XYZ"], 2, "BHP, DVN, MWR, RIO"),
        (["asx", "{data}", "--days", "10/03/2014"], 2, "ISO date"),
        (["asx", "/nonexistent/asx"], 1, "not a directory"),
    ],
)
def test_bad_options_are_refused_with_a_message(
    app: typer.Typer, asx_data: Path, args: list[str], code: int, message: str
) -> None:
    result = CliRunner().invoke(app, ["feed", *[a.format(data=asx_data) for a in args]])
    assert result.exit_code == code
    assert message in " ".join(result.output.split()).replace("│", "")
