"""The OpenAPI document, completed with what only the running configuration knows.

FastAPI builds the document from the routes' declarations, which are fixed at import. A few
bounds come from the settings (``api.max_rows`` caps ``limit``, ``hybrid.max_minutes`` caps
``minutes``) and the time-zone names from DuckDB: they are filled in here, once, when the
document is first asked for, so that a value the schema allows is one the server accepts.
"""

from __future__ import annotations

import zoneinfo
from functools import cache
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from k2.config import Settings
from k2.query.errors import InvalidParameterError
from k2.query.params import parse_timezone

__all__ = ["install_openapi", "time_zones"]


@cache
def time_zones() -> tuple[str, ...]:
    """The IANA zones ``tz`` accepts: Python's zone names that DuckDB can also convert with."""
    found = []
    for name in sorted(zoneinfo.available_timezones()):
        try:
            found.append(parse_timezone(name))
        except InvalidParameterError:
            continue
    return tuple(found)


def _bounds(settings: Settings) -> dict[str, dict[str, Any]]:
    return {
        "limit": {"maximum": settings.api.max_rows},
        "minutes": {"maximum": settings.hybrid.max_minutes},
        "tz": {"enum": list(time_zones())},
    }


def _complete(document: dict[str, Any], bounds: dict[str, dict[str, Any]]) -> None:
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                extra = bounds.get(parameter["name"]) if parameter.get("in") == "query" else None
                if extra is None:
                    continue
                schema = parameter["schema"]
                # An optional parameter is anyOf [the type, null]: the bound goes on the type.
                targets = [s for s in schema.get("anyOf", [schema]) if s.get("type") != "null"]
                for target in targets:
                    target.update(extra)


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """Make ``app.openapi()`` return the document with the settings' bounds (built once, then kept)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            _complete(document, _bounds(settings))
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend it
