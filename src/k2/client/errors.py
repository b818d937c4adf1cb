"""What the client raises: the server's own error code and correlation id, kept as attributes."""

from __future__ import annotations

from k2.errors import K2Error

__all__ = ["ApiError", "ClientConnectionError", "ClientError", "RateLimitError"]


class ClientError(K2Error):
    """Root of the client's errors."""


class ClientConnectionError(ClientError):
    """The server could not be reached, or did not answer within the timeout."""

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(f"{message} ({url})")
        self.url = url


class ApiError(ClientError):
    """The server answered with an error: its status, error code, message and correlation id.

    The correlation id is the one the server logged the request under: quote it in a bug report.
    """

    def __init__(self, status: int, code: str, detail: str, correlation_id: str | None) -> None:
        cid = f" [correlation id {correlation_id}]" if correlation_id else ""
        super().__init__(f"{status} {code}: {detail}{cid}")
        self.status = status
        self.code = code
        self.detail = detail
        self.correlation_id = correlation_id


class RateLimitError(ApiError):
    """429 after every retry; ``retry_after`` is the server's last advice, in seconds."""

    def __init__(self, detail: str, correlation_id: str | None, retry_after: float) -> None:
        super().__init__(429, "rate_limited", detail, correlation_id)
        self.retry_after = retry_after
