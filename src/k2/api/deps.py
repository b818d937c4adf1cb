"""FastAPI dependencies: the engine, the key and rate-limit guard, shared parameters, rendering.

Parameters are declared once here (with descriptions and examples for the OpenAPI page) and
taken as plain strings: ``k2.query.params`` validates them, so a bad value gets a message that
says what was wrong, in K2's error shape, whichever route it reached.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Annotated, Literal

from fastapi import Header, Query, Request
from fastapi.responses import Response

from k2.api.errors import AuthenticationError
from k2.api.health import HealthMonitor
from k2.api.security import ApiKeys, RateLimiter
from k2.api.streams import StreamSlots
from k2.config import Settings
from k2.query.engine import QueryEngine
from k2.query.formats import MEDIA_TYPES, encode, negotiate
from k2.query.params import TimeTravel
from k2.query.reader import Result

__all__ = [
    "AsOfParam",
    "EndParam",
    "FormatParam",
    "Services",
    "SnapshotParam",
    "StartParam",
    "SymbolsParam",
    "caller",
    "engine",
    "guard",
    "ops_guard",
    "peer",
    "render",
    "services",
    "travel",
]


@dataclass
class Services:
    """What the routes share, built once by ``create_app``."""

    settings: Settings
    keys: ApiKeys
    limiter: RateLimiter
    ops_limiter: RateLimiter
    streams: StreamSlots
    _engine: QueryEngine | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _health: HealthMonitor | None = None

    def health(self) -> HealthMonitor:
        """The app's one health monitor (its Kafka and Redis clients live as long as the app)."""
        with self._lock:
            if self._health is None:
                self._health = HealthMonitor(self.settings, lambda: self.engine().reader.catalog)
            return self._health

    def engine(self) -> QueryEngine:
        """The query engine, opened on first use so the API starts even while the catalog is down.

        Raises:
            CatalogError: the catalog cannot be opened (503).
        """
        with self._lock:
            if self._engine is None:
                self._engine = QueryEngine.from_settings(self.settings)
            return self._engine

    def close(self) -> None:
        """Close the engine if one was opened (an engine handed in is closed by its owner)."""
        self.close_health()
        with self._lock:
            if self._engine is not None:
                self._engine.close()

    def close_health(self) -> None:
        with self._lock:
            if self._health is not None:
                self._health.close()
                self._health = None


def services(request: Request) -> Services:
    value = request.app.state.k2
    assert isinstance(value, Services)
    return value


def engine(request: Request) -> QueryEngine:
    return services(request).engine()


def peer(request: Request) -> str:
    """The socket peer as a rate-limit identity (the proxy's client only behind api.trusted_proxies)."""
    return f"ip:{request.client.host if request.client else 'unknown'}"


def caller(request: Request) -> str:
    """Who made the request, as ``guard`` established it (key hash, else peer)."""
    found = getattr(request.state, "caller", None)
    return found if isinstance(found, str) else peer(request)


def guard(
    request: Request,
    x_api_key: Annotated[
        str | None,
        Header(description="API key; required when the API listens beyond localhost or keys are configured."),
    ] = None,
) -> None:
    """Check the API key, then count the request against the caller's rate limit.

    A missing or wrong key is counted against the client address before the 401, so guessing
    keys costs the guesser its budget (and then earns 429s).

    Raises:
        AuthenticationError: 401.
        RateLimitedError: 429 with Retry-After.
    """
    svc = services(request)
    address = peer(request)
    try:
        identity = svc.keys.check(x_api_key, server=request.scope.get("server"))
    except AuthenticationError:
        svc.limiter.acquire(address)
        raise
    who = identity or address
    svc.limiter.acquire(who)
    request.state.caller = who


def ops_guard(request: Request, x_api_key: str | None) -> bool:
    """Count a /health or /metrics request against the client's own budget; True if it may see details.

    Details (error text, table names) go to callers with a valid key, or to anyone while keys
    are not required at all (loopback, none configured).

    Raises:
        RateLimitedError: 429 with Retry-After.
    """
    svc = services(request)
    svc.ops_limiter.acquire(peer(request))
    if not svc.keys.required_on(request.scope.get("server")):
        return True
    return svc.keys.identify(x_api_key) is not None


SymbolsParam = Annotated[
    str | None,
    Query(
        description="Comma-separated symbols (1-16 characters: letters, digits, then . - _).",
        examples=["BHP,RIO"],
    ),
]
StartParam = Annotated[
    str | None,
    Query(
        description="Window start, ISO 8601 (no offset means UTC), inclusive.",
        examples=["2014-03-10T23:00:00Z"],
    ),
]
EndParam = Annotated[
    str | None,
    Query(description="Window end, ISO 8601, exclusive.", examples=["2014-03-10T23:15:00Z"]),
]
SnapshotParam = Annotated[
    int | None,
    Query(description="Time travel: read this snapshot id (see /v1/snapshots).", examples=[None]),
]
AsOfParam = Annotated[
    str | None,
    Query(description="Time travel: read the tables as they were at this time (ISO 8601).", examples=[None]),
]
FormatParam = Annotated[
    Literal["json", "csv", "parquet", "arrow"] | None,
    Query(
        alias="format", description="Result format; otherwise taken from the Accept header (default JSON)."
    ),
]


def travel(snapshot_id: int | None, as_of: str | None) -> TimeTravel:
    return TimeTravel.parse(snapshot_id, as_of)


def render(request: Request, result: Result, fmt: str | None) -> Response:
    """The result in the negotiated format; cursor and snapshots also travel as headers."""
    chosen = negotiate(fmt, request.headers.get("accept"))
    snapshots = {k: None if v is None else str(v) for k, v in result.snapshots.items()}
    meta = {"next_cursor": result.next_cursor, "snapshots": snapshots}
    headers = {"X-K2-Snapshots": ",".join(f"{k}={v}" for k, v in result.snapshots.items())}
    if result.next_cursor:
        headers["X-K2-Next-Cursor"] = result.next_cursor
    return Response(encode(result.table, chosen, meta), media_type=MEDIA_TYPES[chosen], headers=headers)
