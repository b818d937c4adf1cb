"""Compare what reached Iceberg with a simulated feed's ground truth: the proof of completeness.

Used by the tests, ``k2 demo`` and ``k2 load-test``. The claim checked is the lakehouse's: every
unique tick the feed sent is in its table exactly once, and the ``sequence_gaps`` table records
exactly the gaps the feed really had (and their recoveries by late ticks). A hole counts once the
stream moved past it by the reorder window, or its session ended.

With deferral (``deferred=True``), load shedding opens gaps of its own: a deferred symbol's live
ticks run ahead of its deferred ones. Those are not in the truth, and what must hold instead is
that each was recovered (its deferred ticks were back-filled); the feed's own gaps must still all
be recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl

from k2.config import Settings
from k2.lake import open_catalog

__all__ = ["TruthReport", "compare_with_truth", "table_frame"]

KINDS = ("trades", "quotes")
GapKey = tuple[str, str, int, int]


@dataclass
class TruthReport:
    """The comparison's verdict; ``problems`` is empty when the tables equal the truth."""

    problems: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    expected_rows: dict[str, int] = field(default_factory=dict)
    gaps_opened: int = 0
    gaps_recovered: int = 0
    extra_gaps_recovered: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def table_frame(settings: Settings, name: str) -> pl.DataFrame:
    """One table of the configured namespace, read whole (for checks on test-sized data)."""
    t = open_catalog(settings).load_table(f"{settings.lake.namespace}.{name}")
    frame = pl.from_arrow(t.scan().to_arrow())
    assert isinstance(frame, pl.DataFrame)
    return frame


def compare_with_truth(settings: Settings, truth: dict[str, Any], *, deferred: bool = False) -> TruthReport:
    """Rows and gap events of the lake against the truth (``k2.feeds.truth`` format).

    Args:
        settings: names the catalog, namespace and reorder window.
        truth: the simulator's ground truth, as written by ``Simulator.write_truth``.
        deferred: load shedding may have run; see the module docstring.
    """
    report = TruthReport()
    gaps = table_frame(settings, "sequence_gaps")
    window = settings.state.reorder_window
    for kind in KINDS:
        k = truth["kinds"][kind]
        rows = table_frame(settings, kind)
        sent = set(k["sent_ids"])
        report.rows[kind] = rows.height
        report.expected_rows[kind] = len(k["sent_ids"])
        ids = rows["message_id"]
        if rows.height != len(k["sent_ids"]):
            report.problems.append(
                f"{kind}: {rows.height} rows, the feed sent {len(k['sent_ids'])} unique ticks"
            )
        if ids.n_unique() != rows.height:
            report.problems.append(f"{kind}: {rows.height - ids.n_unique()} duplicate rows")
        have = set(ids)
        if have != sent:
            report.problems.append(
                f"{kind}: {len(sent - have)} ticks missing, {len(have - sent)} rows the feed never sent"
            )
        report.problems += _gap_problems(
            kind, k, gaps.filter(pl.col("kind") == kind), window, deferred, report
        )
    return report


def _gap_problems(
    kind: str, k: dict[str, Any], mine: pl.DataFrame, window: int, deferred: bool, report: TruthReport
) -> list[str]:
    last = {(s["symbol"], s["session"]): s["last_sequence"] for s in k["streams"]}
    sessions: dict[str, list[str]] = {}
    for sym, ses in last:
        sessions.setdefault(sym, []).append(ses)
    due = [g for g in k["gaps"] if _due(g, sessions, last, window)]
    want = {_key(g["symbol"], g["session"], g["first"], g["last"]) for g in due}
    want_filled = {_key(g["symbol"], g["session"], g["first"], g["last"]) for g in due if g["filled"]}
    opened_rows = mine.filter(pl.col("event") == "opened")
    opened, recovered = _keyset(opened_rows), _keyset(mine.filter(pl.col("event") == "recovered"))
    report.gaps_opened += len(opened)
    report.gaps_recovered += len(recovered)
    problems = []
    if opened_rows.height != len(opened):
        problems.append(f"{kind}: {opened_rows.height - len(opened)} gaps recorded twice")
    if not deferred:
        if opened != want:
            problems.append(f"{kind}: gaps {sorted(opened ^ want)[:5]} differ from the truth")
        if recovered != want_filled:
            problems.append(f"{kind}: recoveries {sorted(recovered ^ want_filled)[:5]} differ from the truth")
        return problems
    extra = opened - want
    report.extra_gaps_recovered += len(extra & recovered)
    if want - opened:
        problems.append(f"{kind}: the feed's gaps {sorted(want - opened)[:5]} were not recorded")
    if extra - recovered:
        problems.append(
            f"{kind}: gaps {sorted(extra - recovered)[:5]} opened by deferral were never back-filled"
        )
    if want_filled - recovered:
        problems.append(f"{kind}: late fills {sorted(want_filled - recovered)[:5]} not recorded as recovered")
    return problems


def _key(symbol: str, session: str, first: int, last: int) -> GapKey:
    return (symbol, session, int(first), int(last))


def _keyset(frame: pl.DataFrame) -> set[GapKey]:
    return {
        _key(r["symbol"], r["session"].isoformat(), r["first_missing"], r["last_missing"])
        for r in frame.select("symbol", "session", "first_missing", "last_missing").to_dicts()
    }


def _due(g: dict[str, Any], sessions: dict[str, list[str]], last: dict[Any, int], window: int) -> bool:
    ended = max(sessions[g["symbol"]]) > g["session"]
    return ended or last[(g["symbol"], g["session"])] - g["last"] > window
