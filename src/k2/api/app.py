"""The FastAPI application factory.

``create_app(settings)`` is the composition root of the service: it checks the binding is safe
(keys are mandatory beyond localhost), builds the key check and the rate limiter, mounts the /v1
routers behind them, installs the correlation-id/metrics middleware and the one error handler.
The query engine is opened by the background warm-up (``k2.query.warmup``) or on first use, so
the service starts (and /health tells why) even when the catalog is not reachable yet; /ready
answers 200 once warm-up has loaded the tables and set up the live routes' hybrid engine.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from k2 import __version__
from k2.api.dashboard import mount_dashboard
from k2.api.deps import Services, guard
from k2.api.docs import mount_docs
from k2.api.errors import InsecureBindError
from k2.api.handlers import handle_error
from k2.api.hybrid_group import HEADER, resolve
from k2.api.ingest_metrics import ingest_registry
from k2.api.memory import MemoryTrimmer
from k2.api.middleware import RequestContextMiddleware
from k2.api.openapi import install_openapi
from k2.api.routes import V1_ROUTERS, recent, system
from k2.api.security import ApiKeys, RateLimiter, rate_limit_storage
from k2.api.streams import StreamSlots
from k2.config import Settings
from k2.errors import K2Error
from k2.query.engine import QueryEngine
from k2.query.reader import QueryLimits
from k2.query.warmup import Warmer

__all__ = ["create_app"]

_DESCRIPTION = """
K2's query API over the Iceberg tables (DuckDB in-process).

* **Times** are ISO 8601; without an offset they are UTC. Windows are half-open: [start, end).
* **Formats**: JSON (default), CSV, Parquet or Arrow IPC, by `format=` or the `Accept` header.
  In JSON, decimals are exact strings and snapshot ids are strings.
* **Time travel**: every query takes `snapshot_id` or `as_of` (see `/v1/snapshots`).
* **Protection**: `X-API-Key` is required when the API listens beyond localhost or keys are
  configured; requests are rate limited per key (or client address) with 429 and Retry-After;
  rows and time ranges are capped; queries time out with 504, and a full server answers 503 with
  Retry-After; replays and live streams are capped per key and end after api.stream_max_s.
* **Correlation**: every response carries `X-Correlation-ID` (yours, if you sent a sane one).
"""


def create_app(
    settings: Settings, *, engine: QueryEngine | None = None, publish_hybrid: bool = False
) -> FastAPI:
    """Build the API for ``settings`` (pass ``engine`` to share one, e.g. in tests).

    With ``api.shares_hybrid`` the hybrid settings served are the replica group's, from Redis
    (``k2.api.hybrid_group``); ``publish_hybrid`` first makes this process's the group's.

    Raises:
        InsecureBindError: api.host is not a loopback address and no API key is configured.
        GroupUnavailableError: the hybrid settings are shared and Redis did not answer.
        GroupSettingsError: the group's hybrid settings in Redis are unusable.
    """
    keys = ApiKeys(settings.api.api_keys, host=settings.api.host)
    if keys.required and not settings.api.api_keys:
        raise InsecureBindError(settings.api.host)
    hybrid = resolve(settings, publish=publish_hybrid)
    settings = settings.model_copy(update={"hybrid": hybrid.settings})  # what every route reads
    if engine is not None:  # a shared engine answers under this app's caps and timeout
        engine = engine.with_limits(QueryLimits.from_settings(settings.api))
    api = settings.api
    storage = rate_limit_storage(
        api.rate_limit_backend, settings.redis.effective_url, settings.redis.key_prefix
    )
    svc = Services(
        settings,
        keys,
        RateLimiter(api.rate_limit_per_minute, storage=storage, namespace="v1"),
        RateLimiter(api.ops_rate_limit_per_minute, storage=storage, namespace="ops"),
        StreamSlots(api.max_streams_per_key, api.max_streams, api.stream_max_s),
        engine,
        ingest_metrics=ingest_registry(settings.data_dir),
        hybrid_config=hybrid,
    )

    owns_engine = engine is None

    trimmer = MemoryTrimmer()

    # Warm-up runs in the background: the port opens at once and /health answers (a down catalog
    # is reported, not a hang), while /ready says 503 until the first query would be warm.
    warmer = Warmer(svc.engine, warm_rows=api.warm_rows) if owns_engine and api.warmup else None
    svc.warmer = warmer

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        trimmer.start()  # RSS stays near what is in use, not what a burst once freed
        hybrid.start()  # compares with the group's hybrid settings, when they are shared
        if warmer is not None:
            warmer.start()
        yield
        if warmer is not None:
            warmer.stop()
        trimmer.stop()
        hybrid.close()
        recent.close_hybrid(_app)  # the live tail's consumers and prefetch thread
        if owns_engine:  # an engine passed in belongs to the caller
            svc.close()
        else:
            svc.close_health()

    app = FastAPI(
        title="K2 market data API",
        version=__version__,
        description=_DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served from the package by mount_docs: no CDN
        redoc_url=None,
    )
    app.state.k2 = svc
    install_openapi(app, settings)
    for router in (recent.router, *V1_ROUTERS):  # /trades/recent before anything under /trades
        app.include_router(router, prefix="/v1", dependencies=[Depends(guard)])
    app.include_router(system.router)
    mount_docs(app)
    mount_dashboard(app)
    for exc_class in (K2Error, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(exc_class, handle_error)
    app.add_middleware(RequestContextMiddleware, headers={HEADER: hybrid.fingerprint})
    if warmer is not None:  # the live routes' engine is warmed too, before /ready says ready
        warmer.hybrid = functools.partial(recent.hybrid_of, app)
    return app
