"""Response models and shared OpenAPI response documentation."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from k2.api.handlers import ERROR_BODY_EXAMPLE

__all__ = ["ERRORS", "EXAMPLE_QUOTE", "EXAMPLE_TRADE", "SSE_EVENT", "ErrorBody", "tabular"]


class ErrorBody(BaseModel):
    """Every error response has this shape."""

    model_config = ConfigDict(json_schema_extra={"examples": [dict(ERROR_BODY_EXAMPLE)]})

    error: str = Field(description="A short code: invalid_parameter, cap_exceeded, rate_limited…")
    detail: str = Field(description="What was wrong and what is accepted.")
    correlation_id: str = Field(description="Also in the X-Correlation-ID header; quote it in reports.")


# One example of each row kind for the OpenAPI docs, shared by every route that returns it.
EXAMPLE_TRADE = {
    "message_id": "b3ee49ecf7335b888df047c9e19105aa", "exchange": "ASX", "symbol": "BHP",
    "session": "2014-03-11", "sequence": 30, "exchange_ts": "2014-03-10T23:00:00.213+00:00",
    "ingest_ts": "2014-03-10T23:00:00.213+00:00", "price": "35.945000", "size": "1.000000",
    "trade_id": None, "qualifiers": "25", "venue": None, "kafka_partition": 0, "kafka_offset": 1234,
}  # fmt: skip
EXAMPLE_QUOTE = {
    "message_id": "1f0e6c3d2b4a59687766554433221100", "exchange": "ASX", "symbol": "BHP",
    "session": "2014-03-11", "sequence": 41, "exchange_ts": "2014-03-10T22:59:57.105+00:00",
    "ingest_ts": "2014-03-10T22:59:57.105+00:00", "bid_price": "35.940000", "ask_price": "35.950000",
    "bid_size": "1200.000000", "ask_size": "800.000000", "kafka_partition": 1, "kafka_offset": 998,
}  # fmt: skip


#: One server-sent event as a client parses it: the event name and one JSON object as data.
SSE_EVENT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": ["status", "trade", "quote", "bar"]},
        "data": {"type": "string", "description": "One JSON object (a row, a bar or a status)."},
    },
    "required": ["data"],
}


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


#: Responses every /v1 route may give besides 200.
ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error(
        "A parameter is missing, off its pattern, enum or range, or a rule between parameters is broken "
        "(snapshot_id with as_of, end not after start, a range over api.max_range_days, a cursor not "
        "from the previous page), or a cap (rows) is exceeded."
    ),
    401: _error("An API key is required (X-API-Key) or the key is wrong."),
    404: _error("The snapshot (time travel) does not exist."),
    422: _error("A parameter has the wrong type (e.g. a word where a number belongs)."),
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
