"""/docs and /redoc served from the package: nothing K2 serves fetches from the internet.

FastAPI's defaults load Swagger UI and ReDoc from a CDN (and ReDoc's fonts from Google), so on a
market-data server without internet access /docs is a blank page. The assets are vendored under
``static/vendor`` with their licences (``scripts/vendor-web.sh`` refreshes them from npm).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["STATIC_DIR", "STATIC_PREFIX", "mount_docs"]

STATIC_DIR = Path(__file__).with_name("static")
STATIC_PREFIX = "/static"


def mount_docs(app: FastAPI) -> None:
    """Mount the static files and the two documentation pages (the app is built with docs off)."""
    app.mount(STATIC_PREFIX, StaticFiles(directory=STATIC_DIR), name="static")
    vendor = f"{STATIC_PREFIX}/vendor"
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} — Swagger UI",
            swagger_js_url=f"{vendor}/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{vendor}/swagger-ui/swagger-ui.css",
            swagger_favicon_url=f"{vendor}/swagger-ui/favicon-32x32.png",
            # Swagger UI would otherwise ask validator.swagger.io about the schema
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} — ReDoc",
            redoc_js_url=f"{vendor}/redoc/redoc.standalone.js",
            redoc_favicon_url=f"{vendor}/swagger-ui/favicon-32x32.png",
            with_google_fonts=False,
        )
