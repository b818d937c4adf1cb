"""/v1/trades and /v1/quotes: ticks for symbols and a window, paged with an opaque cursor."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from k2.api.deps import (
    AsOfParam,
    EndParam,
    FormatParam,
    RequiredSymbols,
    SnapshotParam,
    StartParam,
    engine,
    render,
    travel,
)
from k2.api.models import EXAMPLE_QUOTE, EXAMPLE_TRADE, tabular
from k2.query.engine import QueryEngine
from k2.query.params import parse_order, parse_symbols
from k2.types import StreamKind

__all__ = ["router"]

router = APIRouter(tags=["ticks"])

OrderParam = Annotated[
    Literal["asc", "desc", "oldest", "newest"] | None,
    Query(
        description="asc or oldest (oldest first, default), desc or newest (newest first).", examples=["asc"]
    ),
]
LimitParam = Annotated[
    int, Query(description="Rows per page, 1 to api.max_rows (the maximum below).", examples=[1000], ge=1)
]
CursorParam = Annotated[
    str | None,
    Query(
        description="next_cursor of the previous page, with the other parameters unchanged; any other "
        "value is refused (400).",
        max_length=4096,
    ),
]


def _ticks(
    kind: StreamKind,
    request: Request,
    eng: QueryEngine,
    symbols: str,
    start: str,
    end: str,
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
    responses=tabular([EXAMPLE_TRADE], "A page of trades."),
)
def read_trades(
    request: Request,
    eng: Annotated[QueryEngine, Depends(engine)],
    symbols: RequiredSymbols,
    start: StartParam,
    end: EndParam,
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
    responses=tabular([EXAMPLE_QUOTE], "A page of quotes."),
)
def read_quotes(
    request: Request,
    eng: Annotated[QueryEngine, Depends(engine)],
    symbols: RequiredSymbols,
    start: StartParam,
    end: EndParam,
    order: OrderParam = None,
    limit: LimitParam = 1000,
    cursor: CursorParam = None,
    snapshot_id: SnapshotParam = None,
    as_of: AsOfParam = None,
    fmt: FormatParam = None,
) -> Response:
    """Top-of-book quotes in (exchange_ts, symbol, sequence) order, paged like /v1/trades."""
    return _ticks("quotes", request, eng, symbols, start, end, order, limit, cursor, snapshot_id, as_of, fmt)
