"""Errors of the query engine, each with the HTTP status the API answers with.

The API's single exception handler reads ``status_code`` and ``error`` from these classes, so a new
condition needs a class here and nothing in the API. Messages say what was wrong and what is
accepted, because they reach the caller verbatim.
"""

from __future__ import annotations

from k2.errors import K2Error

__all__ = [
    "CapExceededError",
    "InvalidCursorError",
    "InvalidParameterError",
    "QueryBusyError",
    "QueryError",
    "QueryTimeoutError",
    "SnapshotNotFoundError",
    "UnsupportedTableError",
]


class QueryError(K2Error):
    """A query could not be answered; the base of every query-engine error."""

    status_code: int = 500
    error: str = "query_failed"


class InvalidParameterError(QueryError):
    """A parameter (symbol, time, interval…) is malformed or out of range.

    Attributes:
        parameter: the parameter's name as the caller spelled it ("symbols", "start"…).
        value: the offending value, for logs (never echoed into SQL).
    """

    status_code = 400
    error = "invalid_parameter"

    def __init__(self, parameter: str, message: str, value: object = None) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter
        self.value = value


class CapExceededError(QueryError):
    """A request asks for more rows or a longer time range than the service allows.

    Attributes:
        cap: which cap ("api.max_rows", "api.max_range_days").
        limit: the cap's value.
        requested: what was asked for (rows, days), when known.
    """

    status_code = 400
    error = "cap_exceeded"

    def __init__(self, message: str, *, cap: str, limit: float, requested: float | None = None) -> None:
        super().__init__(message)
        self.cap = cap
        self.limit = limit
        self.requested = requested


class InvalidCursorError(InvalidParameterError):
    """A pagination cursor is not one this service issued, or belongs to another query."""

    error = "invalid_cursor"

    def __init__(self, message: str) -> None:
        super().__init__("cursor", message)


class SnapshotNotFoundError(QueryError):
    """A time-travel request names a snapshot (or a time) the table does not have.

    Attributes:
        table: the table name.
        snapshot_id: the requested snapshot id, when one was given.
        as_of: the requested time (ISO 8601), when one was given.
    """

    status_code = 404
    error = "snapshot_not_found"

    def __init__(self, message: str, *, table: str, snapshot_id: int | None = None, as_of: str | None = None):
        super().__init__(message)
        self.table = table
        self.snapshot_id = snapshot_id
        self.as_of = as_of


class UnsupportedTableError(QueryError):
    """A table holds something this engine cannot read correctly (delete files, unknown layout).

    Attributes:
        table: the table name.
    """

    status_code = 501
    error = "unsupported_table"

    def __init__(self, message: str, *, table: str) -> None:
        super().__init__(message)
        self.table = table


class QueryTimeoutError(QueryError):
    """A query ran longer than ``api.query_timeout_s`` and was interrupted.

    Attributes:
        timeout_s: the limit that was hit.
        query: which query ("trades", "bars"…).
    """

    status_code = 504
    error = "query_timeout"

    def __init__(self, query: str, timeout_s: float) -> None:
        super().__init__(
            f"the {query} query took longer than {timeout_s:g} s (api.query_timeout_s) and was "
            "interrupted; narrow the time range or the symbols"
        )
        self.query = query
        self.timeout_s = timeout_s


class QueryBusyError(QueryError):
    """Every DuckDB query slot is taken (``api.max_concurrent_queries``): come back shortly.

    Refused rather than queued, so that a burst costs its callers a retry and not the server its
    memory and threads.

    Attributes:
        query: which query ("trades", "bars"…).
        limit: the number of slots.
        retry_after: seconds to wait (the Retry-After header).
    """

    status_code = 503
    error = "busy"
    retry_after = 1

    def __init__(self, query: str, limit: int) -> None:
        super().__init__(
            f"the server is running {limit} queries already (api.max_concurrent_queries); retry shortly"
        )
        self.query = query
        self.limit = limit
