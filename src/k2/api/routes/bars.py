"""/v1/bars: OHLCV bars with VWAP and trade count at any interval, aligned to the local day."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from k2.api.deps import (
    AsOfParam,
    EndParam,
    FormatParam,
    IntervalParam,
    RequiredSymbols,
    SnapshotParam,
    StartParam,
    engine,
    render,
    travel,
)
from k2.api.models import tabular
from k2.query.bars import MAX_INTERVAL_US, MIN_INTERVAL_US
from k2.query.engine import QueryEngine
from k2.query.params import parse_duration, parse_symbols, parse_timezone

__all__ = ["router"]

router = APIRouter(tags=["analytics"])


_BAR = {
    "exchange": "ASX", "symbol": "BHP", "session": "2014-03-11", "start": "2014-03-10T23:00:00+00:00",
    "end": "2014-03-10T23:01:00+00:00", "open": "35.945000", "high": "35.990000", "low": "35.930000",
    "close": "35.980000", "volume": "268000.000000", "vwap": 35.9612, "trades": 112,
}  # fmt: skip


@router.get("/bars", summary="OHLCV bars with VWAP", responses=tabular([_BAR], "Bars, by symbol then start."))
def read_bars(
    request: Request,
    eng: Annotated[QueryEngine, Depends(engine)],
    symbols: RequiredSymbols,
    start: StartParam,
    end: EndParam,
    interval: IntervalParam = "1m",
    tz: Annotated[
        str | None,
        Query(
            description="Align buckets to this IANA zone's midnight instead of each exchange's "
            "(the zones DuckDB knows; listed in this schema).",
            examples=[None],
        ),
    ] = None,
    snapshot_id: SnapshotParam = None,
    as_of: AsOfParam = None,
    fmt: FormatParam = None,
) -> Response:
    """Bars whose bucket starts in [start, end). Buckets start at the exchange-local midnight
    (ASX: Australia/Sydney), so they align with the trading session; a bar holds every trade of its
    bucket. Open/close by (exchange_ts, sequence); VWAP = sum(price*size)/sum(size)."""
    result = eng.bars(
        parse_symbols(symbols),
        eng.window(start, end),
        parse_duration(interval, "interval", minimum_us=MIN_INTERVAL_US, maximum_us=MAX_INTERVAL_US),
        tz=parse_timezone(tz) if tz else None,
        travel=travel(snapshot_id, as_of),
    )
    return render(request, result, fmt)
