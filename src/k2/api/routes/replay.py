"""/v1/replay: a time range in exchange-time order, streamed as NDJSON or server-sent events."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from k2.api.deps import AsOfParam, EndParam, SnapshotParam, StartParam, SymbolsParam, engine, travel
from k2.api.models import ERRORS
from k2.query.engine import QueryEngine
from k2.query.errors import InvalidParameterError
from k2.query.formats import encode_ndjson, encode_sse
from k2.query.params import parse_symbols

__all__ = ["router"]

router = APIRouter(tags=["replay"])

_MEDIA = {"ndjson": "application/x-ndjson", "sse": "text/event-stream"}


def _kinds(value: str) -> tuple[Literal["trades", "quotes"], ...]:
    parts = [p.strip().lower() for p in value.split(",") if p.strip()]
    out: list[Literal["trades", "quotes"]] = []
    for part in parts:
        if part not in ("trades", "quotes"):
            raise InvalidParameterError("kinds", f"{part[:20]!r} is not a kind; use trades, quotes or both")
        if part not in out:
            out.append(part)  # type: ignore[arg-type]
    if not out:
        raise InvalidParameterError("kinds", "at least one of trades, quotes")
    return tuple(out)


@router.get(
    "/replay",
    summary="Replay a time range in exchange-time order (streamed)",
    responses={
        200: {
            "description": "One JSON object per tick, in chunks: NDJSON lines or SSE events "
            "(event: trade|quote). Each object has a `kind` column.",
            "content": {"application/x-ndjson": {"schema": {"type": "string"}},
                        "text/event-stream": {"schema": {"type": "string"}}},
        },
        **ERRORS,
    },
)  # fmt: skip
def replay(
    request: Request,
    eng: Annotated[QueryEngine, Depends(engine)],
    start: StartParam = None,
    end: EndParam = None,
    symbols: SymbolsParam = None,
    kinds: Annotated[
        str, Query(description="trades, quotes or trades,quotes.", examples=["trades,quotes"])
    ] = ("trades,quotes"),
    speed: Annotated[
        float | None,
        Query(
            description="Pace at N times exchange speed (e.g. 10); omitted: as fast as possible.",
            examples=[None],
        ),
    ] = None,
    stream: Annotated[
        Literal["ndjson", "sse"], Query(description="NDJSON lines or server-sent events.")
    ] = "ndjson",
    snapshot_id: SnapshotParam = None,
    as_of: AsOfParam = None,
) -> StreamingResponse:
    """Rows leave in chunks as DuckDB produces them; nothing is materialised in full. The time range
    is capped (api.max_range_days); the row cap does not apply to a stream."""
    result = eng.replay(
        _kinds(kinds),
        parse_symbols(symbols, required=False),
        eng.window(start, end),
        speed=speed,
        travel=travel(snapshot_id, as_of),
    )
    encoder = encode_sse if stream == "sse" else encode_ndjson
    # Run the query up to its first chunk now, so that a failure is still an error response.
    first = next(result.chunks, None)
    chunks = itertools.chain([first] if first is not None else [], result.chunks)

    def body() -> Iterator[bytes]:
        for chunk in chunks:
            yield encoder(chunk)

    headers = {"X-K2-Snapshots": ",".join(f"{k}={v}" for k, v in result.snapshots.items()),
               "Cache-Control": "no-cache"}  # fmt: skip
    return StreamingResponse(body(), media_type=_MEDIA[stream], headers=headers)
