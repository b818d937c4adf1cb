"""FastAPI dependencies: the engine, the key and rate-limit guard, shared parameters, rendering.

Parameters are declared once here (with descriptions and examples for the OpenAPI page). Text
parameters carry the exact pattern of what is accepted (``k2.api.patterns``), which FastAPI
enforces (422); ``k2.query.params`` then parses them and checks what a schema cannot say (the
order of start and end, the range cap) with a 400 that says what was wrong.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Annotated, Literal

from fastapi import Header, Query, Request
from fastapi.responses import Response
from prometheus_client import CollectorRegistry

from k2.api.errors import AuthenticationError
from k2.api.health import HealthMonitor
from k2.api.hybrid_group import HybridConfig
from k2.api.patterns import DATE_TIME, SYMBOLS, duration
from k2.api.security import ApiKeys, RateLimiter
from k2.api.streams import StreamSlots
from k2.config import Settings
from k2.query.bars import MAX_INTERVAL_US, MIN_INTERVAL_US
from k2.query.engine import QueryEngine
from k2.query.formats import MEDIA_TYPES, encode, negotiate
from k2.query.params import TimeTravel
from k2.query.reader import Result
from k2.query.warmup import Warmer
from k2.types import StreamKind

__all__ = [
    "AsOfParam",
    "EndParam",
    "FormatParam",
    "IntervalParam",
    "KindsParam",
    "RequiredSymbols",
    "Services",
    "SnapshotParam",
    "StartParam",
    "SymbolsParam",
    "caller",
    "engine",
    "guard",
    "kinds_of",
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
    #: the ingest pipeline's status file as k2_ingest_* series (``k2.api.ingest_metrics``)
    ingest_metrics: CollectorRegistry | None = None
    #: the hybrid settings served and where they came from (/health's ``hybrid`` check)
    hybrid_config: HybridConfig | None = None
    #: warm-up and prefetch on commit (``k2.query.warmup``); None when off or the engine was handed in
    warmer: Warmer | None = None

    def health(self) -> HealthMonitor:
        """The app's one health monitor (its Kafka and Redis clients live as long as the app)."""
        with self._lock:
            if self._health is None:
                hybrid = self.hybrid_config.status if self.hybrid_config is not None else None
                self._health = HealthMonitor(self.settings, lambda: self.engine().catalog, hybrid=hybrid)
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


_SYMBOLS = "Comma-separated symbols, at most 100 (1-16 characters each: a letter or digit, then letters, digits, . - _)."
SymbolsParam = Annotated[
    str | None,
    Query(description=_SYMBOLS + " Omitted: every symbol.", examples=["BHP,RIO"], pattern=SYMBOLS),
]
RequiredSymbols = Annotated[str, Query(description=_SYMBOLS, examples=["BHP,RIO"], pattern=SYMBOLS)]
StartParam = Annotated[
    str,
    Query(
        description="Window start, ISO 8601 (no offset means UTC), inclusive. The window must end after "
        "it starts and span at most api.max_range_days (400 otherwise).",
        examples=["2014-03-10T23:00:00Z"],
        pattern=DATE_TIME,
    ),
]
EndParam = Annotated[
    str,
    Query(
        description="Window end, ISO 8601, exclusive.", examples=["2014-03-10T23:15:00Z"], pattern=DATE_TIME
    ),
]
SnapshotParam = Annotated[
    int | None,
    Query(
        description="Time travel: read this snapshot id (see /v1/snapshots; 404 if there is none). "
        "Not together with as_of (400).",
        examples=[None],
        ge=0,
        le=2**63 - 1,
    ),
]
AsOfParam = Annotated[
    str | None,
    Query(
        description="Time travel: read the tables as they were at this time (ISO 8601; 404 before the "
        "first commit). Not together with snapshot_id (400).",
        examples=[None],
        pattern=DATE_TIME,
    ),
]
#: A bar length: a whole number of s, m, h or d from 1 s to 1 d (also /v1/bars/live).
IntervalParam = Annotated[
    str,
    Query(
        description="Bar length, 1s to 1d: a whole number and one unit of s, m, h, d (1s, 5s, 1m, 15m, 1h, 1d).",
        examples=["1m"],
        pattern=duration(MIN_INTERVAL_US, MAX_INTERVAL_US),
    ),
]
Kind = StreamKind
_KINDS_ORDERED: dict[str, tuple[Kind, ...]] = {
    "trades": ("trades",),
    "quotes": ("quotes",),
    "trades,quotes": ("trades", "quotes"),
    "quotes,trades": ("quotes", "trades"),
}

#: Which tick streams: one of them, or both in either order (also /v1/stream).
KindsParam = Annotated[
    Literal["trades", "quotes", "trades,quotes", "quotes,trades"],
    Query(description="trades, quotes or both (trades,quotes).", examples=["trades,quotes"]),
]


def kinds_of(value: str) -> tuple[Kind, ...]:
    """The streams a ``KindsParam`` names, each once, in the order given."""
    return _KINDS_ORDERED[value]


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
