"""structlog set-up: readable in a terminal, JSON lines anywhere else.

Later modules bind context (correlation id, topic, partition) with ``bind_context`` so that every
log line of a unit of work carries it without passing loggers around.
"""

from __future__ import annotations

import atexit
import logging
import sys
from typing import Any, TextIO, cast

import structlog

from k2.config import LogSettings
from k2.observability.summary import GapSummary

__all__ = ["bind_context", "configure_logging", "get_logger", "unbind_context"]


_summary: GapSummary | None = None


def _flush_summary() -> None:
    if _summary is not None:
        _summary.flush()


atexit.register(_flush_summary)


class _Stderr:
    """sys.stderr looked up at each write: test runners swap (and close) the stream between calls."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def configure_logging(settings: LogSettings, *, stream: Any = None, verbose: bool = False) -> None:
    """Route structlog and the standard library's logging through one renderer.

    ``verbose`` (``k2 -v``) logs each gap event even where a summary would replace them.
    """
    global _summary
    out = stream or _Stderr()
    use_json = settings.format == "json" or (settings.format == "auto" and not out.isatty())
    if _summary is not None:
        _summary.flush()
    summarise = not verbose and (
        settings.gap_lines == "summary" or (settings.gap_lines == "auto" and not use_json)
    )
    _summary = GapSummary() if summarise else None
    level = getattr(logging, settings.level)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            *shared,
            *([_summary] if _summary else []),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, out)),  # duck-typed stderr
        cache_logger_on_first_use=False,
    )
    # librdkafka, pyiceberg and uvicorn log through the standard library: keep them at WARNING
    # unless asked, and render them the same way.
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(processors=[*shared, renderer], foreign_pre_chain=shared)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(level, logging.WARNING) if level < logging.WARNING else level)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


def bind_context(**values: Any) -> None:
    """Attach values (correlation_id, topic, partition…) to every log line of this context."""
    structlog.contextvars.bind_contextvars(**values)


def unbind_context(*keys: str) -> None:
    structlog.contextvars.unbind_contextvars(*keys)
