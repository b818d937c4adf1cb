"""Response models and shared OpenAPI response documentation."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from k2.api.handlers import ERROR_BODY_EXAMPLE

__all__ = ["ERRORS", "ErrorBody", "tabular"]


class ErrorBody(BaseModel):
    """Every error response has this shape."""

    model_config = ConfigDict(json_schema_extra={"examples": [dict(ERROR_BODY_EXAMPLE)]})

    error: str = Field(description="A short code: invalid_parameter, cap_exceeded, rate_limited…")
    detail: str = Field(description="What was wrong and what is accepted.")
    correlation_id: str = Field(description="Also in the X-Correlation-ID header; quote it in reports.")


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


#: Responses every /v1 route may give besides 200.
ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error("A parameter is invalid, or a cap (rows, time range) is exceeded."),
    401: _error("An API key is required (X-API-Key) or the key is wrong."),
    404: _error("The snapshot (time travel) does not exist."),
    422: _error("A parameter has the wrong type."),
    429: _error("Rate limit exceeded; see Retry-After."),
    503: _error("The Iceberg catalog or a table is unavailable."),
    504: _error("The query ran past api.query_timeout_s."),
}


def tabular(example: list[dict[str, Any]], description: str) -> dict[int | str, dict[str, Any]]:
    """The 200 response of a tabular route: JSON with an example, or CSV, Parquet, Arrow IPC."""
    return {
        200: {
            "description": description + " Format by `format=` or the Accept header.",
            "content": {
                "application/json": {
                    "example": {
                        "data": example,
                        "count": len(example),
                        "next_cursor": None,
                        "snapshots": {"trades": "5278257869543696240"},
                    },
                },
                "text/csv": {"schema": {"type": "string"}},
                "application/vnd.apache.parquet": {"schema": {"type": "string", "format": "binary"}},
                "application/vnd.apache.arrow.stream": {"schema": {"type": "string", "format": "binary"}},
            },
        },
        **ERRORS,
    }
