"""Errors raised at the API's edge (authentication, rate limits, an unsafe binding).

Like ``k2.query.errors``, each class carries the HTTP status and the short error code that the
API's one exception handler puts in the response.
"""

from __future__ import annotations

from k2.errors import ConfigError, K2Error

__all__ = [
    "ApiError",
    "AuthenticationError",
    "GroupSettingsError",
    "GroupUnavailableError",
    "InsecureBindError",
    "RateLimitedError",
    "TooManyStreamsError",
]


class ApiError(K2Error):
    """A request was refused at the edge, before any query ran."""

    status_code: int = 400
    error: str = "bad_request"


class AuthenticationError(ApiError):
    """The X-API-Key header is missing or matches no configured key.

    Attributes:
        reason: "missing" or "invalid".
    """

    status_code = 401
    error = "unauthorized"

    def __init__(self, reason: str) -> None:
        message = (
            "an API key is required: send it in the X-API-Key header"
            if reason == "missing"
            else "the API key in X-API-Key is not valid"
        )
        super().__init__(message)
        self.reason = reason


class RateLimitedError(ApiError):
    """The caller (API key, or client address without one) spent its request budget.

    Attributes:
        retry_after: whole seconds until one more request is allowed (the Retry-After header).
        limit_per_minute: the configured rate (api.rate_limit_per_minute).
    """

    status_code = 429
    error = "rate_limited"

    def __init__(self, retry_after: int, limit_per_minute: int) -> None:
        super().__init__(
            f"more than {limit_per_minute} requests per minute (api.rate_limit_per_minute); "
            f"retry after {retry_after} s"
        )
        self.retry_after = retry_after
        self.limit_per_minute = limit_per_minute


class TooManyStreamsError(ApiError):
    """The caller (or the server as a whole) already holds as many open streams as allowed.

    Attributes:
        limit: the cap that was hit.
        setting: its name (api.max_streams_per_key or api.max_streams).
        retry_after: seconds to wait before trying again (the Retry-After header).
    """

    status_code = 429
    error = "too_many_streams"
    retry_after = 5

    def __init__(self, limit: int, setting: str) -> None:
        who = "this key (or client)" if setting.endswith("per_key") else "the server"
        super().__init__(
            f"{who} already has {limit} open replays/streams ({setting}); close one, or retry later"
        )
        self.limit = limit
        self.setting = setting


class InsecureBindError(ConfigError):
    """The API would listen beyond localhost without any API key configured.

    Attributes:
        host: the configured api.host.
    """

    def __init__(self, host: str) -> None:
        super().__init__(
            f"api.host is {host!r}, which is reachable from other machines, but api.api_keys is empty: "
            "set K2_API__API_KEYS='[\"<key>\"]' or bind to 127.0.0.1"
        )
        self.host = host


class GroupSettingsError(ConfigError):
    """The replica group's hybrid settings in Redis are unusable (not K2's JSON, invalid values).

    Attributes:
        key: the Redis key.
        reason: what is wrong with its value.
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(
            f"Redis key {key!r} should hold the API replicas' hybrid settings, but {reason}; replace "
            "it with this configuration's hybrid.* settings (`k2 config hybrid publish`) or delete it"
        )
        self.key = key
        self.reason = reason


class GroupUnavailableError(K2Error):
    """Redis did not answer, so the replica group's hybrid settings are unknown.

    Attributes:
        address: host:port of the Redis server (no credentials).
    """

    def __init__(self, address: str, detail: str) -> None:
        super().__init__(
            f"Redis at {address} did not answer ({detail}), so the API replicas' shared hybrid settings "
            "are unknown: start Redis (`k2 services up redis`) or fix redis.url; to serve a replica's "
            "own hybrid.* settings instead, K2_API__SHARED_HYBRID=off"
        )
        self.address = address
