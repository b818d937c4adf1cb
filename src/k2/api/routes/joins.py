"""/v1/trades-with-quotes: each trade with the prevailing quote (as-of join with a tolerance)."""

from __future__ import annotations

from typing import Annotated

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
from k2.api.models import EXAMPLE_TRADE, tabular
from k2.api.patterns import duration
from k2.query.engine import QueryEngine
from k2.query.params import parse_duration, parse_symbols

__all__ = ["router"]

router = APIRouter(tags=["analytics"])

_DAY_US = 86_400_000_000

_ROW = {
    **{k: v for k, v in EXAMPLE_TRADE.items() if not k.startswith("kafka_")},
    "quote_ts": "2014-03-10T22:59:57.105+00:00", "bid_price": "35.940000", "ask_price": "35.950000",
    "mid": 35.945, "spread": "0.010000", "quote_age_us": 3108000,
}  # fmt: skip


@router.get(
    "/trades-with-quotes",
    summary="Trades with the prevailing quote",
    responses=tabular([_ROW], "Trades with bid, ask, mid, spread and quote age."),
)
def read_trades_with_quotes(
    request: Request,
    eng: Annotated[QueryEngine, Depends(engine)],
    symbols: RequiredSymbols,
    start: StartParam,
    end: EndParam,
    tolerance: Annotated[
        str,
        Query(
            description="Quotes older than this are stale (columns null): a whole number and one unit "
            "of us, ms, s, m, h, d, from 1us to 1d.",
            examples=["5m"],
            pattern=duration(1, _DAY_US),
        ),
    ] = "5m",
    snapshot_id: SnapshotParam = None,
    as_of: AsOfParam = None,
    fmt: FormatParam = None,
) -> Response:
    """For each trade the last quote of its symbol at or before its time (ASOF JOIN). mid and spread
    are null for a one-sided book. snapshot_id names a trades snapshot; quotes are read as they were
    when that snapshot was committed."""
    result = eng.trades_with_quotes(
        parse_symbols(symbols),
        eng.window(start, end),
        parse_duration(tolerance, "tolerance", minimum_us=1, maximum_us=_DAY_US),
        travel=travel(snapshot_id, as_of),
    )
    return render(request, result, fmt)
