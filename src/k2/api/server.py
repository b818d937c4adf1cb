"""The uvicorn configuration K2 serves with, in one place for ``k2 serve``, the tests and the soak.

Two uvicorn defaults are wrong for K2. ``proxy_headers`` trusts X-Forwarded-For from loopback, so
any local caller (or a same-host proxy's clients) could pick the address the rate limiter keys
on with one header: K2 believes the header only from ``api.trusted_proxies``. And without a
graceful-shutdown timeout, SIGTERM waits for every open stream to end on its own, which for a
live stream is never: K2 gives them ``api.shutdown_grace_s``.
"""

from __future__ import annotations

from typing import Any

import uvicorn

from k2.config import Settings

__all__ = ["server_config"]


def server_config(settings: Settings, app: Any, **overrides: Any) -> uvicorn.Config:
    """A uvicorn config serving ``app`` on api.host:api.port with K2's safety settings."""
    api = settings.api
    options: dict[str, Any] = {
        "host": api.host,
        "port": api.port,
        "log_config": None,
        "access_log": False,  # K2's middleware logs each request, with its correlation id
        "proxy_headers": bool(api.trusted_proxies),
        "forwarded_allow_ips": ",".join(api.trusted_proxies) or None,
        "timeout_graceful_shutdown": api.shutdown_grace_s,
        "limit_concurrency": api.max_connections,
        "server_header": False,
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)
