"""Per-request context: correlation id, structlog binding, request metrics and an access log line.

A pure ASGI middleware (not Starlette's BaseHTTPMiddleware) so that the context variables it
binds are visible to the endpoint, including sync endpoints run in the thread pool and streamed
responses, and so that streaming bodies pass through untouched.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from k2.observability.logging import bind_context, get_logger, unbind_context
from k2.observability.metrics import REGISTRY, Counter, Histogram

__all__ = [
    "CORRELATION_HEADER",
    "REQUESTS",
    "REQUEST_ERRORS",
    "REQUEST_SECONDS",
    "RequestContextMiddleware",
    "method_label",
]

log = get_logger("k2.api.access")

CORRELATION_HEADER = "X-Correlation-ID"
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

REQUESTS = Counter(
    "k2_api_requests_total",
    "API requests by route and status",
    ["method", "route", "status"],
    registry=REGISTRY,
)
REQUEST_ERRORS = Counter(
    "k2_api_request_errors_total", "API responses with status >= 400", ["route", "status"], registry=REGISTRY
)
REQUEST_SECONDS = Histogram(
    "k2_api_request_seconds",
    "API request duration until the response headers",
    ["route"],
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


#: Methods that may become a label; any other token a client sends is counted as "other".
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    """The request method as a metrics label: known methods, else "other" (labels stay bounded)."""
    return method if method in _METHODS else "other"


def correlation_id(scope: Scope) -> str:
    """The request's X-Correlation-ID when it is a sane token, else a fresh one."""
    for name, value in scope.get("headers", []):
        if name == b"x-correlation-id":
            text = str(value.decode("latin-1"))
            if _VALID_ID.match(text):
                return text
            break  # an unusable id (too long, control characters): never log it, make our own
    return uuid.uuid4().hex


class RequestContextMiddleware:
    """Give every HTTP request a correlation id, bind it for logs, echo it, and measure.

    ``headers`` are added to every response (the hybrid settings' fingerprint, which a client
    compares across replicas).
    """

    def __init__(self, app: ASGIApp, headers: dict[str, str] | None = None) -> None:
        self.app = app
        self._extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cid = correlation_id(scope)
        scope.setdefault("state", {})["correlation_id"] = cid
        bind_context(correlation_id=cid)
        started = time.perf_counter()
        status: dict[str, Any] = {"code": 500, "observed": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"x-correlation-id" for k, _ in headers):
                    headers.append((b"x-correlation-id", cid.encode()))
                headers.extend(self._extra)
                message = {**message, "headers": headers}
                status["code"] = message["status"]
                self._observe(scope, status["code"], time.perf_counter() - started)
                status["observed"] = True
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if not status["observed"]:
                self._observe(scope, status["code"], time.perf_counter() - started)
            unbind_context("correlation_id")

    @staticmethod
    def _observe(scope: Scope, code: int, seconds: float) -> None:
        # K2's routes have no path parameters, so a matched route's path is its template; anything
        # unmatched shares one label (metrics cardinality stays bounded whatever clients send).
        matched = scope.get("route") is not None or scope.get("endpoint") is not None
        template = scope.get("path", "") if matched else "unmatched"
        method = method_label(scope.get("method", "GET"))
        REQUESTS.labels(method, template, str(code)).inc()
        REQUEST_SECONDS.labels(template).observe(seconds)
        if code >= 400:
            REQUEST_ERRORS.labels(template, str(code)).inc()
        log.info("request", method=method, path=str(scope.get("path", ""))[:200], route=template, status=code,
                 ms=round(seconds * 1000, 2))  # fmt: skip
