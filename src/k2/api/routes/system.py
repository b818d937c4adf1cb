"""/health, /ready and /metrics: open without an API key (for probes and Prometheus), on their own rate limit.

/health answers from a cached check (``k2.api.health``); anonymous callers learn ok, degraded or
down and nothing else, since error text can name hosts, files and versions.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from k2.api.deps import ops_guard, services
from k2.api.health import public
from k2.observability.metrics import render as render_metrics

__all__ = ["router"]

router = APIRouter(tags=["operations"])

_HEALTH_EXAMPLE: dict[str, Any] = {
    "status": "degraded",
    "checks": {
        "catalog": {"status": "ok", "tables": ["k2.quotes", "k2.reference", "k2.sequence_gaps", "k2.trades"]},
        "kafka": {"status": "down", "detail": "KafkaException: …Failed to get metadata…"},
        "state": {"status": "ok", "backend": "embedded"},
    },
}


@router.get(
    "/health",
    summary="Catalog, Kafka and state store status",
    responses={
        200: {"description": "ok or degraded (Kafka or state store down).", "content": {"application/json": {"example": _HEALTH_EXAMPLE}}},
        429: {"description": "Too many probes from this client (api.ops_rate_limit_per_minute)."},
        503: {"description": "down: the catalog is unreachable, no query can run."},
    },
)  # fmt: skip
async def health(
    request: Request,
    x_api_key: Annotated[str | None, Header(description="With a valid key, the checks' details too.")] = None,
) -> JSONResponse:
    """Each dependency is checked with a short timeout, all at once, at most every api.health_cache_s.
    Without a valid key (when keys are required) the body is only {"status": ...}."""
    detailed = await run_in_threadpool(ops_guard, request, x_api_key)  # Redis, when limits are shared
    answer = await services(request).health().answer()
    status, body = answer if detailed else public(answer)
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


@router.get(
    "/ready",
    summary="Warm and ready for queries",
    responses={
        200: {"description": "Warm-up is done (or off): the first query is as fast as the next."},
        503: {"description": "Still warming up (or retrying: the catalog is down); try again."},
    },
)
def ready(
    request: Request,
    x_api_key: Annotated[
        str | None, Header(description="With a valid key, the warm-up's details too.")
    ] = None,
) -> JSONResponse:
    """For load balancers and orchestrators: route queries here once this answers 200. The process
    is up before then (/health answers); warm-up loads each table's file list and its newest rows
    in the background and sets up the live routes (Kafka clients, tail cache; `hybrid` in the
    details, ready even when Kafka is down), then keeps each new snapshot loaded before queries
    switch to it."""
    detailed = ops_guard(request, x_api_key)
    warmer = services(request).warmer
    body: dict[str, Any] = warmer.describe() if warmer is not None else {"status": "ready", "warmup": "off"}
    code = 200 if warmer is None or warmer.ready else 503
    if not detailed:
        body = {"status": body["status"]}
    headers = {"Cache-Control": "no-store", **({} if code == 200 else {"Retry-After": "1"})}
    return JSONResponse(body, status_code=code, headers=headers)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(request: Request) -> Response:
    """K2's registry in the Prometheus text format: request rate, errors and latency, query times…,
    and the ingest pipeline's status file as `k2_ingest_*` (rate, lag, commits, level, gaps)."""
    ops_guard(request, None)
    pipeline = services(request).ingest_metrics
    body = render_metrics() + (generate_latest(pipeline) if pipeline is not None else b"")
    return Response(body, media_type=CONTENT_TYPE_LATEST)
