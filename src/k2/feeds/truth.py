"""The simulator's ground truth: exactly what was generated, sent, dropped, repeated and broken.

``GroundTruth.write(path)`` writes one JSON object (UTF-8, sorted keys)::

    {
      "format": "k2.sim.truth/1",
      "exchange": "SIM", "seed": 42, "complete": true,
      "config": {"market": {...}, "faults": {...}},       # the options of the run
      "symbols": ["QNH", ...],
      "kinds": {
        "trades": {                                        # the same for "quotes"
          "generated": 40000,          # ticks numbered by the market (sequence numbers used)
          "sent": 39950,               # distinct ticks delivered (on time, reordered or late-filled)
          "dropped_ticks": 50,         # generated - sent: never delivered
          "late_filled_ticks": 12,     # included in "sent"
          "duplicate_copies": 30,      # extra copies (each duplicated tick is sent exactly twice)
          "malformed": 4,              # raw payloads on this kind's topic that are not valid K2 Avro
          "messages": 39984,           # Kafka messages on the topic = sent + duplicate_copies + malformed
          "sent_ids": ["9f0c…", ...],  # message ids of "sent", in the order of their first delivery
          "gaps": [{"exchange", "symbol", "session", "first", "last", "filled": bool}, ...],
          "dropped": [{"exchange", "symbol", "session", "first", "last"}, ...],   # gaps never filled
          "late_filled": [{"exchange", "symbol", "session", "first", "last", "message_ids": [...]}],
          "duplicates": {"count": 30, "message_ids": [...]},
          "reordered": {"count": 7, "message_ids": [...]},
          "malformed_payloads": {"count": 4, "by_reason": {"random_bytes": 1, "truncated": 2,
                                                          "unknown_fingerprint": 1}},
          "streams": [{"exchange", "symbol", "session", "last_sequence"}, ...]   # every stream generated
        }
      },
      "session_resets": [{"exchange", "symbol", "from_session", "to_session", "exchange_ts",
                          "last_sequence": {"trades": n, "quotes": m}}, ...]
    }

Sessions are ISO dates, ``exchange_ts`` an ISO UTC timestamp, ranges inclusive. Definitions (gap,
late fill, reorder, duplicate) are those of :mod:`k2.feeds.faults`. Identities a test can rely on,
per kind: ``sent == generated - dropped_ticks``; ``dropped_ticks`` is the total length of
``dropped``; the set of sent ids is every generated id minus the ids of ``dropped`` ranges; a
``late_filled`` run is one of ``gaps`` with ``filled`` true. Lists are sorted by (symbol, session,
first) except ``sent_ids`` and the id lists, which follow delivery order.

``complete`` is false only when a run was aborted in the middle of a batch (a second Ctrl-C).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl

from k2.feeds.errors import TruthFileError
from k2.feeds.faults import DUPLICATE, REORDERED, Gap, KindPlan
from k2.feeds.market import ResetEvent

__all__ = ["TRUTH_FORMAT", "GroundTruth", "load_truth"]

TRUTH_FORMAT = "k2.sim.truth/1"


@dataclass
class _KindTruth:
    generated: int = 0
    sent_ids: list[pl.Series] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    filled: dict[Gap, list[str]] = field(default_factory=dict)
    dup_ids: list[pl.Series] = field(default_factory=list)
    reordered_ids: list[pl.Series] = field(default_factory=list)
    malformed: Counter[str] = field(default_factory=Counter)
    streams: dict[tuple[int, int], int] = field(default_factory=dict)


def _ids(parts: list[pl.Series]) -> list[str]:
    return pl.concat(parts).to_list() if parts else []


class GroundTruth:
    """Accumulates the facts of each delivered chunk; nothing is inferred after the fact."""

    def __init__(
        self,
        *,
        exchange: str,
        seed: int,
        symbols: tuple[str, ...],
        session_date: Callable[[int], date],
        config: dict[str, Any],
    ) -> None:
        self.exchange = exchange
        self.seed = seed
        self.symbols = symbols
        self.complete = True
        self._session_date = session_date
        self._config = config
        self._kinds = {"trades": _KindTruth(), "quotes": _KindTruth()}
        self._resets: list[ResetEvent] = []

    def record(self, kind: str, clean: pl.DataFrame, plan: KindPlan, delivered: pl.DataFrame) -> None:
        """Add one chunk of ``kind``: its clean rows, the fault plan, and the rows in delivery order."""
        truth = self._kinds[kind]
        truth.generated += clean.height
        tails = clean.group_by("_sym", "_sess").agg(pl.col("sequence").max())
        for sym, sess, last in tails.iter_rows():
            key = (int(sym), int(sess))
            truth.streams[key] = max(truth.streams.get(key, 0), int(last))
        cls = delivered["_class"]
        truth.sent_ids.append(delivered.filter(cls != DUPLICATE)["message_id"])
        truth.dup_ids.append(delivered.filter(cls == DUPLICATE)["message_id"])
        truth.reordered_ids.append(delivered.filter(cls == REORDERED)["message_id"])
        truth.gaps.extend(plan.gaps)
        for gap, rows in plan.filled:
            truth.filled[gap] = rows["message_id"].to_list()

    def record_malformed(self, kind: str, reason: str) -> None:
        self._kinds[kind].malformed[reason] += 1

    def record_resets(self, resets: list[ResetEvent]) -> None:
        self._resets.extend(resets)

    def _gap(self, gap: Gap) -> dict[str, Any]:
        return {
            "exchange": self.exchange,
            "symbol": self.symbols[gap.symbol],
            "session": self._session_date(gap.session).isoformat(),
            "first": gap.first,
            "last": gap.last,
        }

    def _kind_dict(self, truth: _KindTruth) -> dict[str, Any]:
        gaps = sorted(truth.gaps, key=lambda g: (self.symbols[g.symbol], g.session, g.first))
        dropped = [g for g in gaps if g not in truth.filled]
        filled = [g for g in gaps if g in truth.filled]
        sent_ids = _ids(truth.sent_ids)
        dups = _ids(truth.dup_ids)
        malformed = sum(truth.malformed.values())
        return {
            "generated": truth.generated,
            "sent": len(sent_ids),
            "dropped_ticks": sum(g.last - g.first + 1 for g in dropped),
            "late_filled_ticks": sum(len(truth.filled[g]) for g in filled),
            "duplicate_copies": len(dups),
            "malformed": malformed,
            "messages": len(sent_ids) + len(dups) + malformed,
            "sent_ids": sent_ids,
            "gaps": [{**self._gap(g), "filled": g in truth.filled} for g in gaps],
            "dropped": [self._gap(g) for g in dropped],
            "late_filled": [{**self._gap(g), "message_ids": truth.filled[g]} for g in filled],
            "duplicates": {"count": len(dups), "message_ids": dups},
            "reordered": {
                "count": sum(len(p) for p in truth.reordered_ids),
                "message_ids": _ids(truth.reordered_ids),
            },
            "malformed_payloads": {"count": malformed, "by_reason": dict(sorted(truth.malformed.items()))},
            "streams": [
                {
                    "exchange": self.exchange,
                    "symbol": self.symbols[sym],
                    "session": self._session_date(sess).isoformat(),
                    "last_sequence": last,
                }
                for (sym, sess), last in sorted(
                    truth.streams.items(), key=lambda i: (self.symbols[i[0][0]], i[0][1])
                )
            ],
        }

    def _reset_dict(self, reset: ResetEvent) -> dict[str, Any]:
        sym = self.symbols.index(reset.symbol)
        last = {kind: t.streams.get((sym, reset.from_index), 0) for kind, t in self._kinds.items()}
        return {
            "exchange": self.exchange,
            "symbol": reset.symbol,
            "from_session": self._session_date(reset.from_index).isoformat(),
            "to_session": self._session_date(reset.from_index + 1).isoformat(),
            "exchange_ts": datetime.fromtimestamp(reset.exchange_us / 1e6, tz=UTC).isoformat(),
            "last_sequence": last,
        }

    def to_dict(self) -> dict[str, Any]:
        """The truth as plain JSON-ready data (the format in the module docstring)."""
        return {
            "format": TRUTH_FORMAT,
            "exchange": self.exchange,
            "seed": self.seed,
            "complete": self.complete,
            "config": self._config,
            "symbols": list(self.symbols),
            "kinds": {kind: self._kind_dict(t) for kind, t in self._kinds.items()},
            "session_resets": [self._reset_dict(r) for r in self._resets],
        }

    def write(self, path: Path) -> None:
        """Write the truth as JSON, atomically (a reader never sees half a file).

        Raises:
            TruthFileError: the file cannot be written.
        """
        tmp = path.with_name(path.name + ".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(self.to_dict(), sort_keys=True, default=str), encoding="utf-8")
            tmp.replace(path)
        except OSError as exc:
            raise TruthFileError(f"cannot write the ground truth: {exc}", path=path) from exc


def load_truth(path: Path) -> dict[str, Any]:
    """Read a truth file back.

    Raises:
        TruthFileError: missing, not JSON, or not this format.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TruthFileError(f"cannot read the ground truth: {exc}", path=path) from exc
    if not isinstance(data, dict) or data.get("format") != TRUTH_FORMAT:
        raise TruthFileError(f"not a {TRUTH_FORMAT} file", path=path)
    return data
