"""/v1/trades and /v1/quotes: ticks for symbols and a window, paged with an opaque cursor."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from k2.api.deps import (
    AsOfParam,
    EndParam,
    FormatParam,
    SnapshotParam,
    StartParam,
    SymbolsParam,
    engine,
    render,
    travel,
)
from k2.api.models import tabular
from k2.query.engine import QueryEngine
from k2.query.params import parse_order, parse_symbols

__all__ = ["router"]

router = APIRouter(tags=["ticks"])

_TRADE = {
    "message_id": "b3ee49ecf7335b888df047c9e19105aa", "exchange": "ASX", "symbol": "BHP",
    "session": "2014-03-11", "sequence": 30, "exchange_ts": "2014-03-10T23:00:00.213+00:00",
    "ingest_ts": "2014-03-10T23:00:00.213+00:00", "price": "35.945000", "size": "1.000000",
    "trade_id": None, "qualifiers": "25", "venue": None, "kafka_partition": 0, "kafka_offset": 1234,
}  # fmt: skip
_QUOTE = {
    "message_id": "1f0e6c3d2b4a59687766554433221100", "exchange": "ASX", "symbol": "BHP",
    "session": "2014-03-11", "sequence": 41, "exchange_ts": "2014-03-10T22:59:57.105+00:00",
    "ingest_ts": "2014-03-10T22:59:57.105+00:00", "bid_price": "35.940000", "ask_price": "35.950000",
    "bid_size": "1200.000000", "ask_size": "800.000000", "kafka_partition": 1, "kafka_offset": 998,
}  # fmt: skip
OrderParam = Annotated[
    str | None, Query(description="asc (oldest first, default) or desc (newest first).", examples=["asc"])
]
LimitParam = Annotated[int, Query(description="Rows per page (at most api.max_rows).", examples=[1000])]
CursorParam = Annotated[
    str | None, Query(description="next_cursor of the previous page; keep the other parameters unchanged.")
]


def _ticks(
    kind: Literal["trades", "quotes"],
    request: Request,
    eng: QueryEngine,
    symbols: str | None,
    start: str | None,
    end: str | None,
    order: str | None,
    limit: int,
    cursor: str | None,
    snapshot_id: int | None,
    as_of: str | None,
    fmt: str | None,
) -> Response:
    result = eng.ticks(
        kind,
        parse_symbols(symbols),
        eng.window(start, end),
        order=parse_order(order),
        limit=limit,
        cursor=cursor,
        travel=travel(snapshot_id, as_of),
    )
    return render(request, result, fmt)


@router.get(
    "/trades",
    summary="Trades for symbols and a time window",
    responses=tabular([_TRADE], "A page of trades."),
)
def read_trades(
    request: Request,
    eng: Annotated[QueryEngine, Depends(engine)],
    symbols: SymbolsParam = None,
    start: StartParam = None,
    end: EndParam = None,
    order: OrderParam = None,
    limit: LimitParam = 1000,
    cursor: CursorParam = None,
    snapshot_id: SnapshotParam = None,
    as_of: AsOfParam = None,
    fmt: FormatParam = None,
) -> Response:
    """Trades in (exchange_ts, symbol, sequence) order. Follow `next_cursor` for the next page;
    every page reads the snapshot the first page read."""
    return _ticks("trades", request, eng, symbols, start, end, order, limit, cursor, snapshot_id, as_of, fmt)


@router.get(
    "/quotes",
    summary="Quotes for symbols and a time window",
    responses=tabular([_QUOTE], "A page of quotes."),
)
def read_quotes(
    request: Request,
    eng: Annotated[QueryEngine, Depends(engine)],
    symbols: SymbolsParam = None,
    start: StartParam = None,
    end: EndParam = None,
    order: OrderParam = None,
    limit: LimitParam = 1000,
    cursor: CursorParam = None,
    snapshot_id: SnapshotParam = None,
    as_of: AsOfParam = None,
    fmt: FormatParam = None,
) -> Response:
    """Top-of-book quotes in (exchange_ts, symbol, sequence) order, paged like /v1/trades."""
    return _ticks("quotes", request, eng, symbols, start, end, order, limit, cursor, snapshot_id, as_of, fmt)
