"""Gap events: a per-symbol summary on a terminal, every line in JSON logs and with ``-v``."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from k2.config import LogSettings
from k2.observability.logging import configure_logging, get_logger
from k2.observability.summary import SUMMARY_EVENT, GapSummary


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _gap(symbol: str, kind: str = "trades") -> dict[str, object]:
    return {"event": "sequence gap recorded", "kind": kind, "symbol": symbol, "size": 1}


def test_gap_events_are_counted_then_summarised_busiest_first() -> None:
    clock = Clock()
    summary = GapSummary(every_s=10.0, clock=clock)
    for symbol in ["BHP", "RIO", "BHP", "BHP", "RIO", "CBA"]:
        with pytest.raises(structlog.DropEvent):
            summary(None, "warning", _gap(symbol))
    assert summary.pending == 6
    clock.now = 10.5
    line = summary(None, "warning", _gap("BHP"))
    assert line["event"] == SUMMARY_EVENT and line["level"] == "warning"
    assert line["recorded"] == 7
    assert line["recorded_by_symbol"] == "trades:BHP 4, trades:RIO 2, trades:CBA 1"
    assert summary.pending == 0  # counting starts again


def test_other_events_pass_untouched_and_many_symbols_are_cut_short() -> None:
    clock = Clock()
    summary = GapSummary(every_s=1.0, clock=clock)
    other = {"event": "partitions assigned", "count": 4}
    assert summary(None, "info", other) is other
    for i in range(20):
        with pytest.raises(structlog.DropEvent):
            summary(None, "info", {"event": "sequence gap recovered", "kind": "quotes", "symbol": f"S{i}"})
    clock.now = 2.0
    line = summary(None, "info", {"event": "sequence gap recovered", "kind": "quotes", "symbol": "S0"})
    assert line["level"] == "info" and line["recovered"] == 21  # recoveries alone are not a warning
    assert line["recovered_by_symbol"].endswith("(+12 more)")


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_logging() -> Iterator[None]:
    yield
    configure_logging(LogSettings())


def _log_gaps(n: int) -> None:
    log = get_logger("k2.state.tracker")
    for i in range(n):
        log.warning("sequence gap recorded", kind="trades", symbol=f"S{i % 3}", size=1)
    log.info("partitions assigned")


@pytest.mark.usefixtures("restore_logging")
def test_a_terminal_gets_the_summary_and_the_rest_at_exit() -> None:
    out = Tty()
    configure_logging(LogSettings(), stream=out)
    _log_gaps(30)
    text = out.getvalue()
    assert "sequence gap recorded" not in text and "partitions assigned" in text
    configure_logging(LogSettings(), stream=io.StringIO())  # reconfiguring flushes the pending summary
    assert SUMMARY_EVENT in out.getvalue() and "trades:S0 10" in out.getvalue()


@pytest.mark.usefixtures("restore_logging")
def test_json_logs_and_verbose_keep_every_gap_line() -> None:
    out = io.StringIO()  # not a terminal: JSON
    configure_logging(LogSettings(), stream=out)
    _log_gaps(30)
    events = [json.loads(line)["event"] for line in out.getvalue().splitlines()]
    assert events.count("sequence gap recorded") == 30
    tty = Tty()
    configure_logging(LogSettings(), stream=tty, verbose=True)
    _log_gaps(5)
    assert tty.getvalue().count("sequence gap recorded") == 5
    forced = io.StringIO()
    configure_logging(LogSettings(gap_lines="summary"), stream=forced)
    _log_gaps(5)
    assert "sequence gap recorded" not in forced.getvalue()
