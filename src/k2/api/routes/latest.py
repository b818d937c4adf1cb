"""/v1/latest: the last trade and the last quote of each symbol."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from k2.api.deps import AsOfParam, FormatParam, SnapshotParam, SymbolsParam, engine, render, travel
from k2.api.models import tabular
from k2.query.engine import QueryEngine
from k2.query.params import parse_symbols

__all__ = ["router"]

router = APIRouter(tags=["ticks"])

_ROW = {
    "symbol": "BHP", "exchange": "ASX", "trade_ts": "2014-03-14T06:06:06.187+00:00", "price": "35.660000",
    "size": "119323.000000", "trade_sequence": 16358, "quote_ts": "2014-03-14T07:50:00.900+00:00",
    "bid_price": "35.650000", "ask_price": "35.840000", "bid_size": "10445.000000",
    "ask_size": "1000.000000", "quote_sequence": 13484,
}  # fmt: skip


@router.get(
    "/latest", summary="Latest trade and quote per symbol", responses=tabular([_ROW], "One row per symbol.")
)
def read_latest(
    request: Request,
    eng: Annotated[QueryEngine, Depends(engine)],
    symbols: SymbolsParam = None,
    snapshot_id: SnapshotParam = None,
    as_of: AsOfParam = None,
    fmt: FormatParam = None,
) -> Response:
    """Without symbols: every symbol that traded or quoted in the last day of data."""
    result = eng.latest(parse_symbols(symbols, required=False), travel=travel(snapshot_id, as_of))
    return render(request, result, fmt)
