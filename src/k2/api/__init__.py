"""K2's HTTP API: FastAPI routers over the query engine, with keys, rate limits and caps."""

from __future__ import annotations

from k2.api.app import create_app

__all__ = ["create_app"]
