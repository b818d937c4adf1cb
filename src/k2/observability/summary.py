"""Gap events summarised per symbol on a terminal, instead of one line each.

A wide feed records hundreds of gaps a minute; a person at a terminal needs which symbols and how
many, not a scroll of lines that hides everything else. JSON logs (machines) keep every line, and
``k2 -v`` prints each one on a terminal too. ``k2 query gaps`` has them all either way.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, MutableMapping
from typing import Any

import structlog

__all__ = ["GAP_EVENTS", "SUMMARY_EVENT", "GapSummary"]

#: The per-gap log events the summary replaces, and the word each is counted under.
GAP_EVENTS = {"sequence gap recorded": "recorded", "sequence gap recovered": "recovered"}
_SHOWN = 8  # symbols named per line; the rest are counted
SUMMARY_EVENT = "sequence gaps (k2 query gaps lists each; k2 -v logs each)"


class GapSummary:
    """A structlog processor: swallows per-gap events, and every ``every_s`` turns the next one into
    a summary line (counts per symbol, busiest first). ``flush`` writes what is still pending."""

    def __init__(self, every_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self._clock = clock
        self._since = clock()
        self._counts: dict[str, Counter[str]] = {word: Counter() for word in GAP_EVENTS.values()}

    def __call__(
        self, _logger: Any, _method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        word = GAP_EVENTS.get(str(event.get("event")))
        if word is None:
            return event
        self._counts[word][f"{event.get('kind', '?')}:{event.get('symbol', '?')}"] += 1
        if self._clock() - self._since < self.every_s:
            raise structlog.DropEvent
        return self._summary(event)

    @property
    def pending(self) -> int:
        return sum(sum(c.values()) for c in self._counts.values())

    def _take(self) -> tuple[str, dict[str, Any]]:
        """The summary's level and fields; the counts start again."""
        level = "warning" if self._counts["recorded"] else "info"
        fields: dict[str, Any] = {"seconds": round(self._clock() - self._since, 1)}
        for word, counts in self._counts.items():
            if counts:
                fields[word] = sum(counts.values())
                top = ", ".join(f"{key} {n}" for key, n in counts.most_common(_SHOWN))
                rest = len(counts) - _SHOWN
                fields[f"{word}_by_symbol"] = top + (f" (+{rest} more)" if rest > 0 else "")
            counts.clear()
        self._since = self._clock()
        return level, fields

    def _summary(self, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        level, fields = self._take()
        kept = {k: event[k] for k in ("timestamp",) if k in event}
        return {"event": SUMMARY_EVENT, "level": level, **kept, **fields}

    def flush(self) -> None:
        """Log what is pending (at exit, so the last seconds are not lost)."""
        if self.pending:
            level, fields = self._take()
            getattr(structlog.get_logger("k2.gaps"), level)(SUMMARY_EVENT, **fields)
