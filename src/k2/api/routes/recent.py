"""/v1/trades/recent, /v1/quotes/recent, /v1/bars/live and /v1/stream: the live edge of the data.

Answers merge Iceberg at its latest snapshot S with the Kafka tail from S's own offsets
(``k2.hybrid``): nothing is missing and nothing appears twice, whatever the commit lag. Each
response says where the boundary lay (``snapshot_id``, ``boundary``, ``tail``), how many rows came
from the tail and whether the tail was cut short by the cache bounds (``truncated``).

The hybrid engine is built by the warm-up at start (``k2.query.warmup``; on first use when warm-up
is off) and kept on ``app.state``; ``close_hybrid(app)`` closes its Kafka consumers (call it from
the app's lifespan).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from k2.api.deps import (
    FormatParam,
    IntervalParam,
    KindsParam,
    RequiredSymbols,
    Services,
    caller,
    kinds_of,
    services,
)
from k2.api.models import ERRORS, EXAMPLE_QUOTE, EXAMPLE_TRADE, SSE_EVENT, tabular
from k2.api.patterns import DATE_TIME, SYMBOLS
from k2.api.streams import BoundedStreamingResponse
from k2.config.hybrid import Consistency, HybridSettings
from k2.hybrid import HybridEngine, HybridResult
from k2.hybrid.live import LiveEvent, LiveSubscription
from k2.hybrid.view import Anchor
from k2.query.bars import MAX_INTERVAL_US, MIN_INTERVAL_US
from k2.query.formats import MEDIA_TYPES, encode, encode_ndjson, negotiate
from k2.query.params import parse_duration, parse_symbols, parse_time
from k2.types import StreamKind as Kind

__all__ = ["close_hybrid", "hybrid", "hybrid_of", "router"]

router = APIRouter(tags=["live"])

_STATE = "k2_hybrid"
_LOCK = threading.Lock()

_TRADE = {**EXAMPLE_TRADE, "committed": False}
_QUOTE = {**EXAMPLE_QUOTE, "committed": False}
_BAR = {
    "exchange": "ASX", "symbol": "BHP", "session": "2014-03-11", "start": "2014-03-10T23:00:00+00:00",
    "end": "2014-03-10T23:01:00+00:00", "open": "35.945000", "high": "35.990000", "low": "35.930000",
    "close": "35.980000", "volume": "268000.000000", "vwap": 35.9612, "trades": 112, "uncommitted": 7,
}  # fmt: skip


def hybrid(request: Request) -> HybridEngine:
    """The app's hybrid engine, built on first use over the app's query engine.

    Raises:
        CatalogError: the catalog cannot be opened (503).
    """
    return hybrid_of(request.app)


def hybrid_of(app: FastAPI) -> HybridEngine:
    """``app``'s hybrid engine, built on first use (by a request, or by the warm-up at start).

    Raises:
        CatalogError: the catalog cannot be opened (503).
    """
    found = getattr(app.state, _STATE, None)
    if found is None:
        with _LOCK:
            found = getattr(app.state, _STATE, None)
            if found is None:
                svc = app.state.k2
                assert isinstance(svc, Services)
                settings = svc.settings
                found = HybridEngine(
                    settings, svc.engine(), hybrid=getattr(settings, "hybrid", HybridSettings())
                )
                setattr(app.state, _STATE, found)
    assert isinstance(found, HybridEngine)
    return found


def close_hybrid(app: FastAPI) -> None:
    """Close the hybrid engine's Kafka consumers, if it was ever built (from the app's lifespan)."""
    found = getattr(app.state, _STATE, None)
    if isinstance(found, HybridEngine):
        found.close()
        setattr(app.state, _STATE, None)


HybridDep = Annotated[HybridEngine, Depends(hybrid)]
SymbolParam = Annotated[
    str,
    Query(
        description="Symbol (or up to 100 comma-separated symbols; 1-16 characters each).",
        examples=["BHP"],
        pattern=SYMBOLS,
    ),
]
MinutesParam = Annotated[
    float,
    Query(
        description="Window length in minutes, above 0 and at most hybrid.max_minutes (the maximum below).",
        examples=[15],
        gt=0,
        allow_inf_nan=False,
    ),
]
UntilParam = Annotated[
    str | None,
    Query(
        description="Window end (exclusive, ISO 8601); overrides anchor.", examples=[None], pattern=DATE_TIME
    ),
]
ConsistencyParam = Annotated[
    Literal["watermark", "cached"] | None,
    Query(
        description="watermark: the tail up to Kafka's high watermark now (read-your-writes); cached: "
        "up to what the tail cache holds (no broker round trip, up to hybrid.prefetch_interval_s staler). "
        "Default: hybrid.consistency."
    ),
]
AnchorParam = Annotated[
    Literal["latest", "now"],
    Query(description="Without `until`: end the window at the newest tick of the symbols, or now."),
]


def _render(request: Request, result: HybridResult, fmt: str | None) -> Response:
    chosen = negotiate(fmt, request.headers.get("accept"))
    meta = result.meta()
    headers = {
        "X-K2-Snapshots": f"{result.boundary.table}={meta['snapshot_id']}",
        "X-K2-Tail-Rows": str(result.tail_rows),
        "X-K2-Truncated": "true" if result.truncated else "false",
        "Cache-Control": "no-cache",
    }
    return Response(encode(result.table(), chosen, meta), media_type=MEDIA_TYPES[chosen], headers=headers)


def _recent(
    kind: Kind, request: Request, h: HybridEngine, symbol: str, minutes: float, until: str | None,
    anchor: Anchor, consistency: Consistency | None, fmt: str | None,
) -> Response:  # fmt: skip
    result = h.recent(
        kind,
        parse_symbols(symbol, name="symbol"),
        minutes,
        until=parse_time(until, "until") if until else None,
        anchor=anchor,
        consistency=consistency,
    )
    return _render(request, result, fmt)


@router.get(
    "/trades/recent",
    summary="The last minutes of trades, including ticks not yet in Iceberg",
    responses=tabular([_TRADE], "Trades in exchange-time order; `committed` is false for tail rows."),
)
def read_recent_trades(
    request: Request,
    h: HybridDep,
    symbol: SymbolParam,
    minutes: MinutesParam = 15,
    until: UntilParam = None,
    anchor: AnchorParam = "latest",
    consistency: ConsistencyParam = None,
    fmt: FormatParam = None,
) -> Response:
    """Iceberg at its latest snapshot plus Kafka from that snapshot's offsets: exact, with no
    buffer to tune. The JSON body names the snapshot, the offsets boundary and the tail read."""
    return _recent("trades", request, h, symbol, minutes, until, anchor, consistency, fmt)


@router.get(
    "/quotes/recent",
    summary="The last minutes of quotes, including ticks not yet in Iceberg",
    responses=tabular([_QUOTE], "Quotes."),
)
def read_recent_quotes(
    request: Request,
    h: HybridDep,
    symbol: SymbolParam,
    minutes: MinutesParam = 15,
    until: UntilParam = None,
    anchor: AnchorParam = "latest",
    consistency: ConsistencyParam = None,
    fmt: FormatParam = None,
) -> Response:
    """Like /v1/trades/recent, for top-of-book quotes."""
    return _recent("quotes", request, h, symbol, minutes, until, anchor, consistency, fmt)


@router.get(
    "/bars/live",
    summary="OHLCV bars whose newest bar includes uncommitted ticks",
    responses=tabular([_BAR], "Bars by symbol then start; `uncommitted` counts tail trades in each."),
)
def read_live_bars(
    request: Request,
    h: HybridDep,
    symbol: SymbolParam,
    interval: IntervalParam = "1m",
    minutes: MinutesParam = 60,
    until: UntilParam = None,
    anchor: AnchorParam = "latest",
    consistency: ConsistencyParam = None,
    fmt: FormatParam = None,
) -> Response:
    """Bars (aligned like /v1/bars, to the exchange-local day) overlapping the last `minutes`;
    each is complete, and the last one moves with every tick that reaches Kafka."""
    result = h.live_bars(
        parse_symbols(symbol, name="symbol"),
        parse_duration(interval, "interval", minimum_us=MIN_INTERVAL_US, maximum_us=MAX_INTERVAL_US),
        minutes,
        until=parse_time(until, "until") if until else None,
        anchor=anchor,
        consistency=consistency,
    )
    return _render(request, result, fmt)


def sse(event: LiveEvent) -> bytes:
    """One live event as server-sent events: one SSE event per row (``trade``, ``quote``, ``bar``)."""
    if event.rows is None:
        return f"event: {event.kind}\ndata: {json.dumps(event.status, default=str)}\n\n".encode()
    lines = encode_ndjson(event.rows.to_arrow()).decode().splitlines()
    return "".join(f"event: {event.kind}\ndata: {line}\n\n" for line in lines).encode()


@router.get(
    "/stream",
    summary="Live ticks and updating 1-minute bars (server-sent events)",
    responses={
        200: {
            "description": "SSE: `status` first (snapshot and positions), then `trade`, `quote` and "
            "`bar` events, one JSON object per row; `: keep-alive` comments while quiet.",
            "content": {"text/event-stream": {"schema": SSE_EVENT}},
        },
        **ERRORS,
    },
)
async def stream(
    request: Request,
    h: HybridDep,
    symbols: RequiredSymbols,
    kinds: KindsParam = "trades,quotes",
    bars: Annotated[bool, Query(description="Also emit 1-minute bars updated by new trades.")] = True,
    duration: Annotated[
        float | None,
        Query(
            description="Close the stream after this many seconds (default and at most: api.stream_max_s).",
            gt=0,
            allow_inf_nan=False,
        ),
    ] = None,
) -> BoundedStreamingResponse:
    """New ticks of the symbols from the moment of the request, deduplicated as the pipeline does
    (a re-send is not shown twice); bars are whole (history included) and updated in place.
    The stream ends after api.stream_max_s, or after api.stream_idle_s without an event, with a
    last `status` event saying why; a key holds at most api.max_streams_per_key streams."""
    svc = services(request)
    lease = svc.streams.acquire(caller(request))
    try:
        sub = LiveSubscription(h, kinds_of(kinds), parse_symbols(symbols), bars=bars)
        steps = sub.steps(idle_s=svc.settings.api.stream_idle_s, idle_reason="api.stream_idle_s")
        hello = await run_in_threadpool(next, steps)  # start: a failure here is still an error response
        assert isinstance(hello, LiveEvent)  # steps begins with start()'s status event
    except BaseException:
        lease.release()
        raise
    if duration is not None:
        lease.deadline = min(lease.deadline, time.monotonic() + duration)

    async def body() -> AsyncIterator[bytes]:
        try:
            yield sse(hello)
            while True:
                try:  # one step of the subscription's loop (a poll, or handing over its events)
                    step = await run_in_threadpool(next, steps, None)
                except Exception as exc:  # the status line has been sent: report in-band and end
                    yield sse(
                        LiveEvent("status", status={"error": type(exc).__name__, "detail": str(exc)[:200]})
                    )
                    return
                if step is None:  # closed for idleness, its status event sent
                    return
                if isinstance(step, LiveEvent):
                    yield sse(step)
                    continue
                if step.keep_alive:
                    yield b": keep-alive\n\n"
                if not await lease.sleep(step.seconds, request):
                    if lease.remaining() <= 0 and duration is None:
                        yield sse(LiveEvent("status", status={"closed": "api.stream_max_s"}))
                    return
        finally:
            lease.release()
            with contextlib.suppress(ValueError):  # "generator already executing": it ends on its own
                steps.close()

    headers: dict[str, Any] = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return BoundedStreamingResponse(body(), lease, media_type="text/event-stream", headers=headers)
