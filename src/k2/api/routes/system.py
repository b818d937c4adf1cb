"""/health and /metrics: open without an API key (for probes and Prometheus), never rate limited."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from k2.api.deps import services
from k2.api.health import check_health
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
        503: {"description": "down: the catalog is unreachable, no query can run."},
    },
)  # fmt: skip
def health(request: Request) -> JSONResponse:
    """Each dependency is checked with a short timeout, all at once."""
    svc = services(request)
    status, body = check_health(svc.settings, lambda: svc.engine().reader.catalog)
    return JSONResponse(body, status_code=status)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics() -> Response:
    """K2's registry in the Prometheus text format: request rate, errors and latency, query times…"""
    return Response(render_metrics(), media_type=CONTENT_TYPE_LATEST)
