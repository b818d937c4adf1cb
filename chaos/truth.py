"""Exact truth for a chaos run, and the verdict of the Iceberg tables against it.

Message ids are deterministic, so the truth is a set of ids per kind: the simulator writes its own
(``--truth FILE``) and the ASX sample's follow from ``read_asx``. The verdict counts what the issue
asks for: rows, unique ids, duplicates written (rows - unique), missing (truth ids not in the table),
extra (ids the feed never sent) and whether the ``sequence_gaps`` table equals the truth's gaps.
A gap is due once its stream moved past it by the reorder window or its session ended, as in
:mod:`k2.feeds.verify`; gaps that are not due yet may or may not be in the table.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl

from k2.config import Settings
from k2.feeds.verify import table_frame

__all__ = ["KINDS", "Expected", "Verdict", "asx_expected", "check", "sim_expected"]

KINDS = ("trades", "quotes")
GapKey = tuple[str, str, str, int, int]  # kind, symbol, session (ISO), first, last


@dataclass
class Expected:
    """What the lake must hold once the run has drained: the ids and the gaps (due ones only)."""

    ids: dict[str, set[str]]
    gaps: set[GapKey]
    recovered: set[GapKey]
    maybe: set[GapKey] = field(default_factory=set)  # holes not yet due: either answer is right


@dataclass
class Verdict:
    """One run's counts; ``ok`` means every unique tick exactly once and the gaps equal to truth."""

    rows: int
    unique: int
    missing: int
    extra: int
    gaps_ok: bool
    gap_detail: str = ""

    @property
    def duplicates(self) -> int:
        return self.rows - self.unique

    @property
    def ok(self) -> bool:
        return self.duplicates == 0 and self.missing == 0 and self.extra == 0 and self.gaps_ok


def _due(session: str, last_gap: int, last_seq: int, latest_session: str, window: int) -> bool:
    return latest_session > session or last_seq - last_gap > window


def sim_expected(truth_file: Path, window: int) -> Expected:
    """The simulator's truth file as an :class:`Expected` (gaps due under reorder window ``window``)."""
    truth: dict[str, Any] = json.loads(truth_file.read_text())
    ids: dict[str, set[str]] = {}
    gaps: set[GapKey] = set()
    recovered: set[GapKey] = set()
    maybe: set[GapKey] = set()
    for kind in KINDS:
        k = truth["kinds"][kind]
        ids[kind] = set(k["sent_ids"])
        last = {(s["symbol"], s["session"]): s["last_sequence"] for s in k["streams"]}
        latest: dict[str, str] = {}
        for symbol, session in last:
            latest[symbol] = max(latest.get(symbol, session), session)
        for g in k["gaps"]:
            key = (kind, g["symbol"], g["session"], int(g["first"]), int(g["last"]))
            if _due(g["session"], g["last"], last[(g["symbol"], g["session"])], latest[g["symbol"]], window):
                gaps.add(key)
                if g["filled"]:
                    recovered.add(key)
            else:
                maybe.add(key)
    return Expected(ids, gaps, recovered, maybe)


def asx_expected(root: Path, window: int, *, symbols: set[str] | None, days: set[date] | None) -> Expected:
    """The ASX sample's truth: every well-formed line once; each malformed line a hole in its day.

    A hole before the first good line of a day is not a gap K2 can see (nothing came before it),
    nor is one after the last; every hole between two good lines is, once due.
    """
    from k2.feeds.asx import read_asx

    replay = read_asx(root, symbols=symbols, days=days)
    ids: dict[str, set[str]] = {}
    gaps: set[GapKey] = set()
    maybe: set[GapKey] = set()
    for kind in KINDS:
        frame = replay.delivery.frame(kind)
        ids[kind] = set(frame["message_id"].to_list())
        streams = frame.group_by("symbol", "session").agg(pl.col("sequence").sort())
        latest = {
            r["symbol"]: r["session"].isoformat()
            for r in frame.group_by("symbol").agg(pl.col("session").max()).to_dicts()
        }
        for row in streams.to_dicts():
            seqs: list[int] = row["sequence"]
            session = row["session"].isoformat()
            for a, b in itertools.pairwise(seqs):
                if b > a + 1:
                    key = (kind, row["symbol"], session, a + 1, b - 1)
                    due = _due(session, b - 1, seqs[-1], latest[row["symbol"]], window)
                    (gaps if due else maybe).add(key)
    return Expected(ids, gaps, set(), maybe)


def _gap_keys(frame: pl.DataFrame) -> list[GapKey]:
    return [
        (r["kind"], r["symbol"], r["session"].isoformat(), int(r["first_missing"]), int(r["last_missing"]))
        for r in frame.select("kind", "symbol", "session", "first_missing", "last_missing").to_dicts()
    ]


def check(settings: Settings, expected: Expected, *, defers: bool = False) -> Verdict:
    """Read the run's tables whole (test-sized data) and count against ``expected``.

    ``defers``: the run deferred ticks, and each deferral is a gap that its back-fill recovered
    (docs/resilience.md); then the gaps still open must equal the truth's gaps never filled.
    """
    rows = unique = missing = extra = 0
    for kind in KINDS:
        ids = table_frame(settings, kind)["message_id"]
        have = set(ids.to_list())
        rows += ids.len()
        unique += len(have)
        missing += len(expected.ids[kind] - have)
        extra += len(have - expected.ids[kind])
    gaps = table_frame(settings, "sequence_gaps")
    opened_list = _gap_keys(gaps.filter(pl.col("event") == "opened"))
    opened = set(opened_list)
    recovered = set(_gap_keys(gaps.filter(pl.col("event") == "recovered")))
    problems = []
    if len(opened_list) != len(opened):
        problems.append(f"{len(opened_list) - len(opened)} gaps recorded twice")
    if defers:
        problems += _open_gaps_cover_truth(opened - recovered, expected)
    else:
        wrong = (opened ^ expected.gaps) - expected.maybe
        if wrong:
            problems.append(f"gaps differ from truth: {sorted(wrong)[:3]} (+{max(0, len(wrong) - 3)})")
        wrong_rec = (recovered ^ expected.recovered) - expected.maybe
        if wrong_rec:
            problems.append(f"recoveries differ: {sorted(wrong_rec)[:3]} (+{max(0, len(wrong_rec) - 3)})")
    return Verdict(rows, unique, missing, extra, not problems, "; ".join(problems))


def _open_gaps_cover_truth(still_open: set[GapKey], expected: Expected) -> list[str]:
    """With deferrals: every gap of the truth that was never filled lies inside a gap K2 still holds
    open, and every gap K2 holds open contains one. A deferral records its range as a gap and its
    back-fill recovers it; when the range spans a real gap, K2's open record is the wider range
    (a gap is marked recovered only once it is filled whole), so the records are compared by cover."""
    truth = (expected.gaps - expected.recovered) - expected.maybe

    def inside(inner: GapKey, outer: GapKey) -> bool:
        return inner[:3] == outer[:3] and outer[3] <= inner[3] and inner[4] <= outer[4]

    uncovered = sorted(t for t in truth if not any(inside(t, g) for g in still_open))
    false = sorted(g for g in still_open - expected.maybe
                   if not any(inside(t, g) for t in truth | expected.maybe))  # fmt: skip
    problems = []
    if uncovered:
        problems.append(f"truth gaps not open: {uncovered[:3]} (+{max(0, len(uncovered) - 3)})")
    if false:
        problems.append(f"open gaps with no truth gap inside: {false[:3]} (+{max(0, len(false) - 3)})")
    return problems
