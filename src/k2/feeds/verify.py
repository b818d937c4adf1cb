"""Compare what reached Iceberg with a simulated feed's ground truth: the proof of completeness.

Used by the tests, ``k2 demo`` and ``k2 load-test``. The claim checked is the lakehouse's: every
unique tick the feed sent is in its table exactly once, and the ``sequence_gaps`` table records
exactly the gaps the feed really had (and their recoveries by late ticks). A hole counts once the
stream moved past it by the reorder window, or its session ended, or its partition's exchange clock
(the newest exchange time on it) got ``state.reorder_timeout`` past the hole's opening: the exchange
time of the tick right after the gap, which the simulator always sends on time, so the clock at its
arrival is its own time. The partitions and times are read from the tick tables' lineage columns.
With ``drained=True`` (the ingester stayed up ``reorder_timeout`` of wall time after the feed
stopped, so its wall-clock fallback aged every remaining hole) every gap counts; without it, a gap
not due by these rules may still be recorded (by that fallback) but must be one of the truth's.

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
from k2.types import TICK_KINDS

__all__ = ["TruthReport", "compare_with_truth", "table_frame"]

KINDS = TICK_KINDS
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
    pending: int = 0
    """Truth gaps not due yet: younger than the time bound when their partition's clock stopped."""
    latency_s: list[float] = field(default_factory=list)
    """Per recorded gap: detected_at minus its opening (exchange clock), seconds."""

    @property
    def ok(self) -> bool:
        return not self.problems


def table_frame(settings: Settings, name: str) -> pl.DataFrame:
    """One table of the configured namespace, read whole (for checks on test-sized data)."""
    t = open_catalog(settings).load_table(f"{settings.lake.namespace}.{name}")
    frame = pl.from_arrow(t.scan().to_arrow())
    assert isinstance(frame, pl.DataFrame)
    return frame


def compare_with_truth(
    settings: Settings, truth: dict[str, Any], *, deferred: bool = False, drained: bool = False
) -> TruthReport:
    """Rows and gap events of the lake against the truth (``k2.feeds.truth`` format).

    Args:
        settings: names the catalog, namespace and reorder window.
        truth: the simulator's ground truth, as written by ``Simulator.write_truth``.
        deferred: load shedding may have run; see the module docstring.
        drained: the ingester outlived the feed by the time bound; see the module docstring.
    """
    report = TruthReport()
    gaps = table_frame(settings, "sequence_gaps")
    window = settings.state.reorder_window
    timeout_us = round(settings.state.reorder_timeout * 1e6)
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
        opening = _openings(rows, k["gaps"], timeout_us)
        report.problems += _gap_problems(
            kind, k, gaps.filter(pl.col("kind") == kind), window, deferred, report, opening, drained
        )
    return report


def _openings(
    rows: pl.DataFrame, gaps: list[dict[str, Any]], timeout_us: int
) -> dict[GapKey, tuple[int, bool]]:
    """Per truth gap: the exchange time (µs) of the tick after it, and whether its partition's final
    clock is ``timeout_us`` past that."""
    if not gaps or "kafka_partition" not in rows.columns:
        return {}
    ticks = rows.select(
        "symbol", pl.col("session").cast(pl.String), "sequence", pl.col("exchange_ts").dt.epoch("us"),
        "kafka_partition",
    )  # fmt: skip
    clocks = dict(ticks.group_by("kafka_partition").agg(pl.col("exchange_ts").max()).iter_rows())
    wanted = pl.DataFrame(
        {
            "symbol": [g["symbol"] for g in gaps],
            "session": [g["session"] for g in gaps],
            "sequence": [int(g["last"]) + 1 for g in gaps],
            "first": [int(g["first"]) for g in gaps],
            "last": [int(g["last"]) for g in gaps],
        }
    )
    found = wanted.join(ticks, on=["symbol", "session", "sequence"], how="inner").unique(
        ["symbol", "session", "first"]
    )
    return {
        _key(sym, ses, first, last): (ts, clocks[p] - ts >= timeout_us)
        for sym, ses, first, last, ts, p in found.select(
            "symbol", "session", "first", "last", "exchange_ts", "kafka_partition"
        ).iter_rows()
    }


def _gap_problems(
    kind: str,
    k: dict[str, Any],
    mine: pl.DataFrame,
    window: int,
    deferred: bool,
    report: TruthReport,
    opening: dict[GapKey, tuple[int, bool]],
    drained: bool = False,
) -> list[str]:
    last = {(s["symbol"], s["session"]): s["last_sequence"] for s in k["streams"]}
    sessions: dict[str, list[str]] = {}
    for sym, ses in last:
        sessions.setdefault(sym, []).append(ses)
    due = [
        g
        for g in k["gaps"]
        if drained
        or _due(g, sessions, last, window)
        or opening.get(_key(g["symbol"], g["session"], g["first"], g["last"]), (0, False))[1]
    ]
    report.pending += len(k["gaps"]) - len(due)
    want = {_key(g["symbol"], g["session"], g["first"], g["last"]) for g in due}
    want_filled = {_key(g["symbol"], g["session"], g["first"], g["last"]) for g in due if g["filled"]}
    opened_rows = mine.filter(pl.col("event") == "opened")
    opened, recovered = _keyset(opened_rows), _keyset(mine.filter(pl.col("event") == "recovered"))
    # a gap not due by the stream that was recorded anyway: the wall-clock fallback aged it once the
    # feed stopped (the ingester outlived it by the time bound); it must still be one of the truth's
    young = {_key(g["symbol"], g["session"], g["first"], g["last"]): g["filled"] for g in k["gaps"]}
    tail = {key for key in opened if key in young and key not in want}
    want |= tail
    want_filled |= {key for key in tail if young[key]}
    report.pending -= len(tail)
    report.gaps_opened += len(opened)
    report.gaps_recovered += len(recovered)
    for r in opened_rows.select(
        "symbol", "session", "first_missing", "last_missing", "detected_at"
    ).iter_rows():
        at = opening.get(_key(r[0], r[1].isoformat(), r[2], r[3]))
        if at is not None:
            report.latency_s.append((r[4].timestamp() * 1e6 - at[0]) / 1e6)
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
    return bool(ended or last[(g["symbol"], g["session"])] - g["last"] > window)
