"""The live dashboard at ``/``: one static page shipped in the package, fed by the JSON API and SSE.

No build step and no third-party script: plain HTML, CSS and an SVG chart drawn by
``static/dashboard/dashboard.js``. The page itself needs no key; its requests to ``/v1`` carry the
key the user types in when the API asks for one (401). A Content-Security-Policy header holds the
page to K2's own origin, so nothing it loads or calls can leave the server.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import FileResponse

from k2.api.docs import STATIC_DIR

__all__ = ["CONTENT_SECURITY_POLICY", "DASHBOARD_DIR", "mount_dashboard"]

DASHBOARD_DIR = STATIC_DIR / "dashboard"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def mount_dashboard(app: FastAPI) -> None:
    """Serve the page at ``/`` (its script and styles come from ``/static/dashboard/``)."""

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(
            DASHBOARD_DIR / "index.html",
            media_type="text/html",
            headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-cache"},
        )
