"""The dashboard at / in a real browser, against a live K2: real Kafka, `k2 ingest`, Iceberg, uvicorn.

A simulated feed (with duplicates, gaps and malformed payloads) goes through the real pipeline in
two phases, so the trades table has snapshots before and after the second. Then headless Chromium,
cut off from everything but the loopback (``tests.integration.browser``), checks that

* the candles drawn are exactly ``/v1/bars``' answer for the same window;
* a tick produced while the page is open reaches the tape and the chart without a reload, and once
  committed the chart still equals ``/v1/bars``;
* the time-travel control redraws the chart as of an earlier snapshot (``/v1/bars?snapshot_id=``);
* the pipeline, quality and lake panels show the status route's figures;
* with API keys configured the page asks for one and works once given it;
* /docs lists the routes with the network cut off, and nothing at all was requested from outside.

Screenshots go to a directory the test prints; with ``DASHBOARD_SCREENSHOTS_TO_DOCS=1`` they are
also copied to docs/screenshots/ (the README's picture).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
import uvicorn
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from k2.api import create_app
from k2.config import Settings, load_settings
from k2.feeds.faults import FaultConfig
from k2.feeds.market import MarketConfig, symbol_names
from k2.feeds.publish import FeedPublisher
from k2.feeds.simulator import Simulator, SimulatorConfig
from k2.lake import ensure_tables, open_catalog
from k2.services.process import free_port
from k2.stream.admin import ensure_topics
from k2.stream.dlq import DeadLetter
from k2.stream.producer import TickProducer
from tests.integration.browser import chromium, outside_requests

DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
BAR_FIELDS = ("start", "end", "open", "high", "low", "close", "volume", "trades")
FAULTS = FaultConfig(dup_rate=0.01, gap_rate=0.004, late_fill_fraction=0.5, malformed_rate=0.003)
KEY = "dashboard-key"


class Recording:
    """A TickSink in front of the producer that remembers each trade's message id and symbol."""

    def __init__(self, producer: TickProducer) -> None:
        self.producer = producer
        self.trades: list[tuple[str, str]] = []

    def send(self, kind: str, batch: pl.DataFrame) -> int:
        if kind == "trades":
            self.trades += list(zip(batch["message_id"].to_list(), batch["symbol"].to_list(), strict=True))
        return self.producer.send(kind, batch)

    def send_raw(
        self, topic: str, key: bytes | None, value: bytes, headers: dict[str, str] | None = None
    ) -> None:
        self.producer.send_raw(topic, key, value, headers)

    def send_dead_letter(self, letter: DeadLetter) -> None:
        self.producer.send_dead_letter(letter)


@dataclass
class LiveK2:
    settings: Settings
    url: str
    keyed_url: str
    symbol: str
    feed: Callable[[int], list[str]]  # produce n more ticks; the chosen symbol's new trade ids
    shots: Path


def _serve(settings: Settings) -> tuple[str, Callable[[], None]]:
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=settings.api.port,
                            log_config=None, access_log=False)  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=15)

    return f"http://127.0.0.1:{settings.api.port}", stop


def _with_api(settings: Settings, **api: Any) -> Settings:
    data = settings.model_dump()
    data["api"] = {**data["api"], "port": free_port(), **api}
    return load_settings(
        **{k: data[k] for k in ("data_dir", "kafka", "redis", "lake", "state", "api", "pipeline")}
    )


def _ingest(settings: Settings) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("K2_")}
    env.update(
        K2_DATA_DIR=str(settings.data_dir),
        K2_KAFKA__PORT=str(settings.kafka.port),
        K2_KAFKA__TOPIC_PREFIX=settings.kafka.topic_prefix,
        K2_PIPELINE__GROUP_ID=settings.pipeline.group_id,
        K2_LAKE__COMMIT_INTERVAL_S="1.0",
        K2_LOG__LEVEL="WARNING",
        RUST_BACKTRACE="0",  # malformed payloads make Polars panic (caught): quietly
    )
    log = (settings.data_dir / "ingest.log").open("ab")
    return subprocess.Popen([sys.executable, "-m", "k2.cli", "ingest"], env=env, stdout=subprocess.DEVNULL,
                            stderr=log)  # fmt: skip


def _committed(http: httpx.Client, symbol: str, read_at_least: int, timeout_s: float = 90) -> None:
    """Wait until the pipeline read that many messages and the symbol's trades are all in Iceberg."""
    deadline = time.monotonic() + timeout_s
    while True:
        ingest = http.get("/v1/status").json()["ingest"]
        if ingest and ingest["messages"] >= read_at_least and ingest["lag"] == 0:
            live = http.get("/v1/bars/live", params={"symbol": symbol, "minutes": 60}).json()
            if live["tail_rows"] == 0:
                return
        assert time.monotonic() < deadline, f"the pipeline did not commit in {timeout_s}s: {ingest}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def live(services: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveK2]:
    tag = os.urandom(4).hex()
    root = tmp_path_factory.mktemp("dashboard")
    settings = load_settings(
        data_dir=root / "k2",
        kafka={**services.kafka.model_dump(), "topic_prefix": f"d{tag}."},
        redis={**services.redis.model_dump(), "key_prefix": f"d{tag}:"},
        pipeline={"group_id": f"d{tag}"},
        api={"port": free_port()},
    )
    settings.data_dir.mkdir(parents=True)
    ensure_topics(settings.kafka)
    ensure_tables(open_catalog(settings), settings.lake.namespace)
    names = symbol_names(3, 14)
    sim = Simulator(SimulatorConfig(MarketConfig(symbols=names, rate_per_symbol=1.0, chunk_ticks=100), FAULTS,
                                    seed=14), keep_truth=False)  # fmt: skip
    deliveries = sim.deliveries()  # endless: a count would end the simulated stream
    producer = TickProducer(settings.kafka)
    recording = Recording(producer)
    publisher = FeedPublisher(recording, settings.kafka)
    symbol = names[0]

    def feed(count: int) -> list[str]:
        before, published = len(recording.trades), 0
        while published < count:
            published += publisher.publish(next(deliveries))
        producer.flush()
        return [mid for mid, sym in recording.trades[before:] if sym == symbol]

    def sent() -> int:
        c = publisher.counts
        return c.trades + c.quotes + c.raw

    pipeline = _ingest(settings)
    url, stop = _serve(settings)
    keyed_url, stop_keyed = _serve(_with_api(settings, api_keys=[KEY]))
    try:
        with httpx.Client(base_url=url, timeout=60) as http:
            feed(1_800)  # phase 1: about 10 minutes of market time
            _committed(http, symbol, sent())
            feed(900)  # phase 2: later bars, later snapshots
            _committed(http, symbol, sent())
        shots = tmp_path_factory.mktemp("dashboard-screenshots")
        print(f"\ndashboard screenshots: {shots}")
        yield LiveK2(settings, url, keyed_url, symbol, feed, shots)
    finally:
        stop_keyed()
        stop()
        pipeline.terminate()
        try:
            pipeline.wait(30)
        except subprocess.TimeoutExpired:
            pipeline.kill()
        producer.close()


# -- helpers over the page --------------------------------------------------------------------------
def _wait(driver: WebDriver, what: str, check: Callable[[WebDriver], Any], timeout_s: float = 60) -> Any:
    try:
        return WebDriverWait(driver, timeout_s, poll_frequency=0.25).until(check)
    except Exception as exc:
        logs = [e["message"] for e in driver.get_log("browser")][-10:]
        raise AssertionError(f"timed out waiting for {what}; browser console: {logs}") from exc


def _quality_shown(driver: WebDriver) -> tuple[int, list[str]]:
    """The dashboard's dead-letter count and the symbols of its gaps panel."""
    dead = int(driver.find_element(By.ID, "dead-letters").text.replace(",", ""))
    rows = driver.find_elements(By.CSS_SELECTOR, "#gaps tbody tr")
    return dead, [r.find_element(By.TAG_NAME, "td").text for r in rows]


def _quality_said(http: httpx.Client) -> tuple[int, list[str]]:
    """The same two figures from /v1/status."""
    quality = http.get("/v1/status").json()["quality"]
    return quality["dead_letters"], [g["symbol"] for g in quality["by_symbol"]]


def _drawn(driver: WebDriver) -> list[dict[str, str]]:
    script = "return [...document.querySelectorAll('#chart g.bar')].map(g => ({...g.dataset}))"
    rows: list[dict[str, str]] = driver.execute_script(script)
    return [{k: r[k] for k in BAR_FIELDS} for r in rows]


def _chart(driver: WebDriver) -> dict[str, str]:
    found: dict[str, str] = driver.execute_script("return {...document.getElementById('chart').dataset}")
    return found


def _answer(
    http: httpx.Client, symbol: str, bars: list[dict[str, str]], **extra: Any
) -> list[dict[str, str]]:
    params = {"symbols": symbol, "start": bars[0]["start"], "end": bars[-1]["end"], "interval": "1m", **extra}
    response = http.get("/v1/bars", params=params)
    assert response.status_code == 200, response.text
    return [{k: str(b[k]) for k in BAR_FIELDS} for b in response.json()["data"]]


def _shoot(driver: WebDriver, live: LiveK2, name: str) -> None:
    path = live.shots / f"{name}.png"
    driver.save_screenshot(str(path))
    if os.environ.get("DASHBOARD_SCREENSHOTS_TO_DOCS") == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, DOCS_SCREENSHOTS / path.name)


# -- the tests --------------------------------------------------------------------------------------
def test_dashboard_shows_the_lake_the_live_tail_and_time_travel(live: LiveK2) -> None:
    with chromium() as driver, httpx.Client(base_url=live.url, timeout=60) as http:
        driver.get(f"{live.url}/?symbol={live.symbol}")
        _wait(driver, "the chart", lambda d: _chart(d).get("state") == "ready" and int(_chart(d)["bars"]) > 3)
        _wait(
            driver,
            "the stream",
            lambda d: d.find_element(By.ID, "connection").get_attribute("data-state") == "open",
        )

        # 1. the candles are /v1/bars' answer for the same window, field by field
        drawn = _drawn(driver)
        assert drawn == _answer(http, live.symbol, drawn)
        assert _chart(driver)["mode"] == "live"

        # 2. the panels show the status route's figures
        _wait(driver, "the pipeline panel", lambda d: d.find_element(By.ID, "level").text == "NORMAL")
        status = http.get("/v1/status").json()
        assert driver.find_element(By.ID, "ingest-state").text.startswith("running")
        partitions = driver.find_elements(By.CSS_SELECTOR, "#lags tbody tr")
        assert len(partitions) == len(status["ingest"]["lags"]) >= 1
        assert {r.find_elements(By.TAG_NAME, "td")[1].text for r in partitions} == {
            str(p["partition"]) for p in status["ingest"]["lags"]
        }
        assert [b.text.split()[0] for b in driver.find_elements(By.CSS_SELECTOR, "#breakers tbody tr")] == [
            b["name"] for b in status["ingest"]["breakers"]
        ]

        # The ingester is still running: a gap that ages into the table between the page's last poll
        # and this one is on one side only. The page must show what the route says once both settle.
        def quality_agrees(d: WebDriver) -> bool:
            try:
                return _quality_shown(d) == _quality_said(http)
            except StaleElementReferenceException:  # the panel re-rendered while being read
                return False

        _wait(driver, "the data-quality panel to show the status route's figures", quality_agrees)
        status = http.get("/v1/status").json()
        assert status["quality"]["dead_letters"] > 0  # the feed's malformed payloads
        assert driver.find_elements(By.CSS_SELECTOR, "#dlq tbody tr")
        assert status["quality"]["by_symbol"], "the feed's gaps reached the lake"
        _shoot(driver, live, "dashboard")

        # 3. a new tick reaches the tape and the chart without a reload
        version = int(_chart(driver)["version"])
        last_before = drawn[-1]
        new_ids: list[str] = []
        while not new_ids:  # the feed's next ticks may all be other symbols' or quotes
            new_ids = live.feed(60)
        shown = _wait(
            driver, "a new trade on the tape",
            lambda d: [mid for mid in new_ids if d.find_elements(By.CSS_SELECTOR, f'#tape tr[data-message-id="{mid}"]')],
        )  # fmt: skip
        assert shown
        _wait(driver, "the newest candle to move",
              lambda d: int(_chart(d)["version"]) > version and (_drawn(d)[-1] != last_before or len(_drawn(d)) != len(drawn)))  # fmt: skip
        _committed(http, live.symbol, 0)  # once the pipeline committed them, the picture is the lake's
        _wait(
            driver,
            "the chart to settle on the lake",
            lambda d: _drawn(d) == _answer(http, live.symbol, _drawn(d)),
        )
        _shoot(driver, live, "dashboard-live-tick")

        # 4. time travel: an earlier snapshot redraws the same window as Iceberg held it then
        live_bars = _drawn(driver)
        snapshots = http.get("/v1/snapshots", params={"table": "trades", "limit": 20}).json()["data"]
        head_rows = snapshots[0]["total_rows"]
        earlier = next(s for s in reversed(snapshots) if 0 < s["total_rows"] < head_rows)
        _wait(driver, "the snapshot list",
              lambda d: d.find_elements(By.CSS_SELECTOR, f'#snapshot option[value="{earlier["snapshot_id"]}"]'))  # fmt: skip
        Select(driver.find_element(By.ID, "snapshot")).select_by_value(earlier["snapshot_id"])
        _wait(driver, "the chart as of the snapshot",
              lambda d: _chart(d).get("snapshotId") == earlier["snapshot_id"] and _chart(d)["state"] == "ready")  # fmt: skip
        assert _chart(driver)["mode"] == "snapshot"
        travelled = _drawn(driver)
        assert travelled != live_bars
        expected = _answer(http, live.symbol, live_bars, snapshot_id=earlier["snapshot_id"])
        assert travelled == expected
        _shoot(driver, live, "dashboard-time-travel")
        driver.find_element(By.ID, "live-button").click()
        _wait(
            driver,
            "the live chart again",
            lambda d: _chart(d)["mode"] == "live" and "snapshotId" not in _chart(d),
        )

        assert outside_requests(driver, live.url) == []


def test_a_missing_browser_fails_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.integration import browser

    monkeypatch.setattr(browser.shutil, "which", lambda name: None)
    monkeypatch.setattr(browser, "Path", lambda p: Path("/nonexistent") / Path(p).name)
    with pytest.raises(pytest.fail.Exception, match=r"chromium not found: .*make system-deps"):
        browser._binary("chromium")


def test_with_api_keys_the_page_asks_for_one(live: LiveK2) -> None:
    with chromium() as driver:
        driver.get(f"{live.keyed_url}/?symbol={live.symbol}")
        _wait(driver, "the key form", lambda d: d.find_element(By.ID, "key-form").is_displayed())
        assert _chart(driver)["state"] == "loading"
        field = driver.find_element(By.ID, "api-key")
        field.send_keys("wrong")
        driver.find_element(By.ID, "api-key-submit").click()
        _wait(driver, "the refusal", lambda d: "refused" in d.find_element(By.ID, "key-error").text)
        field.clear()
        field.send_keys(KEY)
        driver.find_element(By.ID, "api-key-submit").click()
        _wait(driver, "the chart", lambda d: _chart(d).get("state") == "ready" and int(_chart(d)["bars"]) > 3)
        assert not driver.find_element(By.ID, "key-form").is_displayed()
        assert outside_requests(driver, live.keyed_url) == []


def test_docs_list_the_routes_with_the_network_cut_off(live: LiveK2) -> None:
    with chromium() as driver:
        driver.get(f"{live.url}/docs")
        paths = _wait(
            driver, "Swagger UI's operations",
            lambda d: [e.text for e in d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")] or None,
        )  # fmt: skip
        assert {"/v1/bars", "/v1/status", "/v1/stream", "/v1/snapshots"} <= {
            p.replace("\u200b", "") for p in paths
        }
        _shoot(driver, live, "docs-offline")
        assert outside_requests(driver, live.url) == []


def test_the_grafana_dashboard_names_only_metrics_the_running_app_exports(live: LiveK2) -> None:
    from tests.unit.test_grafana import dashboard_metrics, exported

    with httpx.Client(base_url=live.url, timeout=30) as http:
        text = http.get("/metrics").text
    missing = dashboard_metrics() - exported(text)
    assert not missing, f"deploy/grafana/k2-dashboard.json names metrics /metrics lacks: {sorted(missing)}"
    assert "k2_ingest_up 1.0" in text  # the running pipeline's status file, not a leftover
    assert re.search(r'^k2_ingest_lag\{partition="\d+",topic="d[0-9a-f]+\.trades"\} \d', text, re.M)
