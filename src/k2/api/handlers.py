"""The API's one exception handler: every error becomes the same JSON body.

``{"error": <code>, "detail": <message>, "correlation_id": <id>}`` with the status the error
class declares (``status_code``/``error`` on K2's error classes). FastAPI's own validation errors
(400 for a value off its schema's pattern, enum or range, or missing; 422 for a value of the wrong
type) and unknown routes (404) take the same shape. Unexpected exceptions answer 500 with a
generic message (the traceback goes to the log under the same correlation id, never to the
client).
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from k2.api.patterns import meaning
from k2.errors import ConfigError, K2Error
from k2.lake.errors import CatalogError, TableMissingError
from k2.observability.logging import get_logger

__all__ = ["ERROR_BODY_EXAMPLE", "handle_error"]

log = get_logger("k2.api")

ERROR_BODY_EXAMPLE = {
    "error": "invalid_parameter",
    "detail": "symbols: 'bhp;drop' is not a valid symbol: use 1-16 characters, letters and digits…",
    "correlation_id": "4f1c2e0a9b7d4c55a1e0f3b2c6d8e9f0",
}
#: Errors from other packages that reach the API, with the status they deserve.
_STATUS: list[tuple[type[Exception], int, str]] = [
    (CatalogError, 503, "catalog_unavailable"),
    (TableMissingError, 503, "table_missing"),
    (ConfigError, 500, "configuration_error"),
]


def _describe(exc: Exception) -> tuple[int, str, str]:
    if isinstance(exc, RequestValidationError):
        parts, kinds = [], set()
        for err in exc.errors():
            kind = str(err.get("type", ""))
            kinds.add(kind)
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "header", "path"))
            pattern = (err.get("ctx") or {}).get("pattern") if kind == "string_pattern_mismatch" else None
            words = meaning(pattern) if isinstance(pattern, str) else None
            message = "is required" if kind == "missing" else f"expected {words}" if words else err.get("msg")
            parts.append(f"{where or 'request'}: {message or 'invalid'}")
        # 422 only when a value is not of its type at all (a word where a number belongs); a value
        # of the right type that is out of range, off pattern or missing is a 400, like K2's own checks.
        wrong_type = bool(kinds) and all(k.endswith(("_parsing", "_type")) for k in kinds)
        return (422 if wrong_type else 400), "invalid_parameter", "; ".join(parts)
    if isinstance(exc, StarletteHTTPException):
        code = "not_found" if exc.status_code == 404 else "http_error"
        return exc.status_code, code, str(exc.detail)
    if isinstance(exc, K2Error):
        status = getattr(exc, "status_code", None)
        if isinstance(status, int):
            error = getattr(exc, "error", "error")
            # Our own 5xx messages may name files or internals: say less to the client.
            detail = (
                str(exc)
                if status < 500 or status in (501, 503, 504)
                else "the query failed; see the server log"
            )
            return status, error, detail
        for cls, mapped, error in _STATUS:
            if isinstance(exc, cls):
                return mapped, error, str(exc)
        return 500, "internal_error", "an internal error occurred; see the server log"
    return 500, "internal_error", "an unexpected error occurred; see the server log"


async def handle_error(request: Request, exc: Exception) -> JSONResponse:
    """Map any exception to K2's error body (registered for K2Error, validation, HTTP errors, Exception)."""
    status, error, detail = _describe(exc)
    cid = getattr(request.state, "correlation_id", None) or request.headers.get("x-correlation-id", "")
    fields: dict[str, Any] = {"status": status, "error": error, "path": request.url.path}
    if status >= 500:
        log.error("request failed", **fields, exc_info=exc)
    else:
        log.info("request refused", **fields, detail=detail)
    headers = {"X-Correlation-ID": cid} if cid else {}
    retry_after = getattr(exc, "retry_after", None)  # 429s, and 503s that know when to come back
    if isinstance(exc, K2Error) and isinstance(retry_after, int | float):
        headers["Retry-After"] = str(max(1, int(retry_after)))
    if isinstance(exc, StarletteHTTPException) and exc.headers:
        headers.update(exc.headers)
    return JSONResponse(
        {"error": error, "detail": detail, "correlation_id": cid}, status_code=status, headers=headers
    )
