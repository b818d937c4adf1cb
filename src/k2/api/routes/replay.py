"""/v1/replay: a time range in exchange-time order, streamed as NDJSON or server-sent events.

The route holds no thread while it waits: DuckDB hands over one batch at a time in the thread
pool, and a paced replay waits between chunks with ``asyncio.sleep`` (``StreamLease.sleep``), so
slow replays cost sockets, not workers. Each replay holds a stream slot of its caller and ends at
``api.stream_max_s`` (SSE: with a last ``status`` event saying so).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Literal

import pyarrow as pa
from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool

from k2.api.deps import (
    AsOfParam,
    EndParam,
    KindsParam,
    SnapshotParam,
    StartParam,
    SymbolsParam,
    caller,
    engine,
    kinds_of,
    services,
    travel,
)
from k2.api.models import ERRORS, SSE_EVENT
from k2.api.streams import BoundedStreamingResponse, StreamLease
from k2.query.engine import QueryEngine
from k2.query.formats import encode_ndjson, encode_sse
from k2.query.params import parse_symbols
from k2.query.replay import MAX_SPEED, MIN_SPEED, Pacer, ReplayStream

__all__ = ["router"]

router = APIRouter(tags=["replay"])

_MEDIA = {"ndjson": "application/x-ndjson", "sse": "text/event-stream"}


@router.get(
    "/replay",
    summary="Replay a time range in exchange-time order (streamed)",
    responses={
        200: {
            "description": "One JSON object per tick, in chunks: NDJSON lines or SSE events "
            "(event: trade|quote). Each object has a `kind` column.",
            "content": {"application/x-ndjson": {"schema": {"type": "string"}},
                        "text/event-stream": {"schema": SSE_EVENT}},
        },
        **ERRORS,
    },
)  # fmt: skip
async def replay(
    request: Request,
    eng: Annotated[QueryEngine, Depends(engine)],
    start: StartParam,
    end: EndParam,
    symbols: SymbolsParam = None,
    kinds: KindsParam = "trades,quotes",
    speed: Annotated[
        float | None,
        Query(
            description=f"Pace at N times exchange speed ({MIN_SPEED:g} to {MAX_SPEED:g}, e.g. 10); "
            "omitted: as fast as possible.",
            examples=[None],
            ge=MIN_SPEED,
            le=MAX_SPEED,
            allow_inf_nan=False,
        ),
    ] = None,
    stream: Annotated[
        Literal["ndjson", "sse"], Query(description="NDJSON lines or server-sent events.")
    ] = "ndjson",
    snapshot_id: SnapshotParam = None,
    as_of: AsOfParam = None,
) -> BoundedStreamingResponse:
    """Rows leave in chunks as DuckDB produces them; nothing is materialised in full. The time range
    is capped (api.max_range_days); the row cap does not apply to a stream; a replay lasts at most
    api.stream_max_s, and a key holds at most api.max_streams_per_key replays and streams at once."""
    lease = services(request).streams.acquire(caller(request))
    try:
        result = await run_in_threadpool(
            eng.replay,
            kinds_of(kinds),
            parse_symbols(symbols, required=False),
            eng.window(start, end),
            speed=speed,
            travel=travel(snapshot_id, as_of),
        )
        # Run the query up to its first batch now, so that a failure is still an error response.
        first = await run_in_threadpool(next, result.batches, None)
    except BaseException:
        lease.release()
        raise
    headers = {"X-K2-Snapshots": ",".join(f"{k}={v}" for k, v in result.snapshots.items()),
               "Cache-Control": "no-cache", "X-K2-Stream-Max-Seconds": f"{lease.remaining():.0f}"}  # fmt: skip
    return BoundedStreamingResponse(
        _body(request, result, first, lease, stream), lease, media_type=_MEDIA[stream], headers=headers
    )


async def _body(
    request: Request, result: ReplayStream, first: pa.RecordBatch | None, lease: StreamLease, stream: str
) -> AsyncIterator[bytes]:
    encoder = encode_sse if stream == "sse" else encode_ndjson
    pacer = Pacer(result.speed) if result.speed else None
    batch = first
    try:
        while batch is not None:
            if pacer is None:
                yield encoder(batch)
            else:
                pacer.load(batch)
                while (wait := pacer.wait()) is not None:
                    if wait > 0 and not await lease.sleep(wait, request):
                        break  # the deadline, or the client left
                    yield encoder(pacer.take())
            if lease.remaining() <= 0 or await request.is_disconnected():
                break
            batch = await run_in_threadpool(next, result.batches, None)
        if lease.remaining() <= 0 and stream == "sse":
            yield b'event: status\ndata: {"closed": "api.stream_max_s"}\n\n'
    finally:
        lease.release()
        _close(result.batches)


def _close(batches: Iterator[pa.RecordBatch]) -> None:
    """Close the DuckDB cursor now, unless a worker thread is still inside it (then it closes on its own)."""
    close = getattr(batches, "close", None)
    if close is not None:
        with contextlib.suppress(ValueError):  # "generator already executing"
            close()
