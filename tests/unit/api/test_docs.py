"""/docs and /redoc work on a machine without internet access: every asset comes from K2 itself."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

# src= and href= of every script, stylesheet and icon the page loads
_ASSET = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""")


def _assets(html: str) -> list[str]:
    return _ASSET.findall(html)


@pytest.mark.parametrize(("page", "needs"), [("/docs", 3), ("/redoc", 2)])
def test_the_docs_pages_load_only_local_assets(client: TestClient, page: str, needs: int) -> None:
    response = client.get(page)
    assert response.status_code == 200
    assets = _assets(response.text)
    assert len(assets) >= needs, assets
    assert [a for a in assets if not a.startswith("/static/vendor/")] == []
    assert "googleapis" not in response.text and "cdn.jsdelivr" not in response.text
    for asset in assets:
        served = client.get(asset)
        assert served.status_code == 200, asset
        assert len(served.content) > 500, asset


def test_swagger_ui_does_not_call_the_online_validator(client: TestClient) -> None:
    assert '"validatorUrl": null' in client.get("/docs").text


def test_the_vendored_assets_ship_with_their_licences(client: TestClient) -> None:
    for path in ("swagger-ui/LICENSE", "redoc/LICENSE", "VERSIONS"):
        assert client.get(f"/static/vendor/{path}").status_code == 200


def test_a_path_outside_the_static_folder_is_refused(client: TestClient) -> None:
    assert client.get("/static/../app.py").status_code == 404
    assert client.get("/static/vendor/%2e%2e/%2e%2e/app.py").status_code == 404


def test_the_docs_routes_stay_out_of_the_openapi_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/docs" not in paths and "/redoc" not in paths and not any(p.startswith("/static") for p in paths)
