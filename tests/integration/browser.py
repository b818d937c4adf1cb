"""Headless Debian Chromium through chromedriver (Selenium), with the outside network cut off.

Every request goes through a proxy that does not exist (Chromium sends loopback directly) and every
host name but the loopback fails to resolve, so a page that needed anything from the internet
would break visibly. ``outside_requests`` reads Chromium's performance log (DevTools Network
events) to name any such attempt, blocked or not: an empty list proves nothing was fetched from
outside. Missing chromium or chromedriver is a failure with the fix in the message, never a skip.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from k2.services.process import free_port

__all__ = ["chromium", "outside_requests"]

_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1440,1400", "--hide-scrollbars",
)  # fmt: skip


def _binary(name: str) -> str:
    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if found is None:
        pytest.fail(
            f"{name} not found: the dashboard's browser test needs Debian's chromium and chromium-driver "
            "(`make system-deps`, or `apt-get install chromium chromium-driver`)",
            pytrace=False,
        )
    return found


@contextmanager
def chromium() -> Iterator[webdriver.Chrome]:
    """A headless Chromium that can reach only the loopback, logging its network events."""
    options = webdriver.ChromeOptions()
    options.binary_location = _binary("chromium")
    profile = tempfile.mkdtemp(prefix="k2-chromium-")
    for flag in _FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--proxy-server=http://127.0.0.1:{free_port()}")  # nothing listens there
    options.add_argument("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(_binary("chromedriver")), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def outside_requests(driver: webdriver.Chrome, origin: str) -> list[str]:
    """Network URLs the browser asked for that are not on ``origin``, since the last call."""
    allowed = urlsplit(origin).netloc
    seen = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") != "Network.requestWillBeSent":
            continue
        url = message["params"]["request"]["url"]
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https", "ws", "wss") or parts.netloc == allowed:
            continue  # the server itself, data:/blob: URLs, Chromium's own chrome:// pages
        seen.append(url)
    return seen
