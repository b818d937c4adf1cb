"""/v1/symbols and /v1/gaps: per symbol and session counts, first/last times and sequence gaps."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from k2.api.deps import AsOfParam, FormatParam, SnapshotParam, SymbolsParam, engine, render, travel
from k2.api.models import tabular
from k2.api.patterns import DATE
from k2.query.engine import QueryEngine
from k2.query.params import parse_date, parse_symbols
from k2.query.stats import SessionRange
from k2.types import StreamKind

__all__ = ["router"]

router = APIRouter(tags=["data quality"])

FirstSession = Annotated[
    str | None,
    Query(
        alias="start",
        description="First session (YYYY-MM-DD), inclusive. With end: not after end, and at most "
        "api.max_range_days sessions (400 otherwise).",
        examples=["2014-03-10"],
        pattern=DATE,
    ),
]
LastSession = Annotated[
    str | None,
    Query(
        alias="end",
        description="Last session (YYYY-MM-DD), inclusive.",
        examples=["2014-03-14"],
        pattern=DATE,
    ),
]
_SUMMARY = {
    "symbol": "BHP", "exchange": "ASX", "session": "2014-03-11", "trades": 18522,
    "first_trade": "2014-03-10T20:57:14.754+00:00", "last_trade": "2014-03-11T05:10:33.118+00:00",
    "quotes": 15630, "first_quote": "2014-03-10T18:43:45.676+00:00",
    "last_quote": "2014-03-11T07:50:00.900+00:00", "open_gaps": 0, "recovered_gaps": 1, "missing": 0,
}  # fmt: skip
_GAP = {
    "kind": "trades", "exchange": "SIM", "symbol": "ABC", "session": "2024-01-02", "first_missing": 1041,
    "last_missing": 1043, "size": 3, "detected_at": "2024-01-02T10:31:07.000+00:00",
    "recovered_at": None, "recovered_by": None, "status": "open",
}  # fmt: skip


def _sessions(eng: QueryEngine, start: str | None, end: str | None) -> SessionRange:
    return SessionRange(
        parse_date(start, "start") if start else None,
        parse_date(end, "end") if end else None,
        max_days=eng.limits.max_range_days,
    )


@router.get("/symbols", summary="Per symbol and session: counts, first/last time, gaps",
            responses=tabular([_SUMMARY], "One row per symbol and session."))  # fmt: skip
def read_symbols(
    request: Request,
    eng: Annotated[QueryEngine, Depends(engine)],
    symbols: SymbolsParam = None,
    start: FirstSession = None,
    end: LastSession = None,
    snapshot_id: SnapshotParam = None,
    as_of: AsOfParam = None,
    fmt: FormatParam = None,
) -> Response:
    """Trades and quotes per symbol and trading session, the first and last tick time of each,
    and the session's sequence gaps (open, recovered, and the count still missing)."""
    result = eng.symbols(
        parse_symbols(symbols, required=False), _sessions(eng, start, end), travel=travel(snapshot_id, as_of)
    )
    return render(request, result, fmt)


@router.get("/gaps", summary="Sequence gaps", responses=tabular([_GAP], "Gaps, oldest session first."))
def read_gaps(
    request: Request,
    eng: Annotated[QueryEngine, Depends(engine)],
    symbols: SymbolsParam = None,
    start: FirstSession = None,
    end: LastSession = None,
    kind: Annotated[StreamKind | None, Query(description="Only this stream.")] = None,
    status: Annotated[
        Literal["open", "recovered", "pending", "all"],
        Query(
            description="open: recorded, still missing; recovered: filled late; pending: a hole not "
            "recorded yet (younger than the reorder window and timeout; detected_at = when it opened)."
        ),
    ] = "all",
    snapshot_id: SnapshotParam = None,
    as_of: AsOfParam = None,
    fmt: FormatParam = None,
) -> Response:
    """Ranges of sequence numbers the pipeline found missing, and whether late ticks filled them."""
    result = eng.gaps(
        parse_symbols(symbols, required=False),
        _sessions(eng, start, end),
        kind=kind,
        status=status,
        travel=travel(snapshot_id, as_of),
    )
    return render(request, result, fmt)
