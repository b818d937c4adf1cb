"""The Python client against a real K2 API (uvicorn on a socket) over one real ASX day."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import httpx
import polars as pl
import pyarrow as pa
import pytest
import uvicorn

from k2.api import create_app
from k2.client import ApiError, AsyncK2Client, K2Client
from k2.config import Settings, load_settings
from k2.lake import ensure_tables, open_catalog
from k2.services.process import free_port
from tests.unit.query.lakedata import append_commits, asx_frames

DAY = (date(2014, 3, 12),)
START, END = "2014-03-11T20:00:00Z", "2014-03-12T07:00:00Z"  # the whole local day, AEDT
NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "k2_client.ipynb"


@dataclass(frozen=True)
class Live:
    url: str
    settings: Settings
    snapshots: list[int]


@pytest.fixture
def live(settings: Settings) -> Iterator[Live]:
    """One ASX day committed in three snapshots, served by the real app on a free port, with a key."""
    tables = ensure_tables(open_catalog(settings), settings.lake.namespace)
    frames = asx_frames(DAY)
    snaps = append_commits(tables["trades"], frames["trades"], 3)
    append_commits(tables["quotes"], frames["quotes"], 2)
    data = settings.model_dump()
    data["api"] = {**data["api"], "port": free_port(), "api_keys": ["client-key"]}
    served = load_settings(
        **{k: v for k, v in data.items() if k in ("data_dir", "kafka", "redis", "lake", "api")}
    )
    config = uvicorn.Config(create_app(served), host="127.0.0.1", port=served.api.port, log_config=None,
                            access_log=False)  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield Live(f"http://127.0.0.1:{served.api.port}", served, snaps)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _json(live: Live, path: str, **params: object) -> pl.DataFrame:
    body = httpx.get(live.url + path, params=params, headers={"X-API-Key": "client-key"}, timeout=30).json()
    return pl.DataFrame(body["data"])


def test_every_table_call_returns_what_the_json_route_returns(live: Live) -> None:
    with K2Client(live.url, api_key="client-key") as k2:
        trades = k2.trades("BHP", START, END)
        assert trades.height == asx_frames(DAY)["trades"].filter(pl.col("symbol") == "BHP").height
        assert trades["sequence"].is_sorted()  # pages joined in order, none twice
        bars = k2.bars("BHP", START, END)
        want = _json(live, "/v1/bars", symbols="BHP", start=START, end=END)
        assert bars.height == want.height > 300
        assert bars["close"].cast(pl.Float64).to_list() == want["close"].cast(pl.Float64).to_list()
        assert k2.latest("BHP,RIO")["symbol"].sort().to_list() == ["BHP", "RIO"]
        assert k2.snapshots()["snapshot_id"].to_list()[::-1] == live.snapshots
        assert k2.symbols().height > 0 and k2.gaps().height == _json(live, "/v1/gaps").height
        joined = k2.trades_with_quotes("BHP", "2014-03-11T23:00:00Z", "2014-03-12T00:00:00Z")
        assert {"bid_price", "ask_price"} <= set(joined.columns) and joined.height > 0


def test_pages_follow_the_cursor_and_outputs_are_polars_pandas_or_arrow(live: Live) -> None:
    with K2Client(live.url, api_key="client-key") as k2:
        whole = k2.trades("BHP", START, END)
        pages = list(k2.iter_trades("BHP", START, END, page_rows=4_000))
        assert len(pages) == -(-whole.height // 4_000)
        assert pl.concat(pages)["message_id"].to_list() == whole["message_id"].to_list()
        assert isinstance(k2.bars("BHP", START, END, output="arrow"), pa.Table)
        assert k2.bars("BHP", START, END, output="pandas").shape[0] == k2.bars("BHP", START, END).height


def test_time_travel_reads_an_earlier_snapshot(live: Live) -> None:
    with K2Client(live.url, api_key="client-key") as k2:
        first = k2.trades("BHP,RIO,DVN,MWR", START, END, snapshot_id=live.snapshots[0])
        now = k2.trades("BHP,RIO,DVN,MWR", START, END)
        assert 0 < first.height < now.height
        assert set(first["message_id"].to_list()) <= set(now["message_id"].to_list())


def test_replay_and_stream_iterate_frames_rows_and_events(live: Live) -> None:
    with K2Client(live.url, api_key="client-key") as k2:
        window = ("2014-03-11T23:00:00Z", "2014-03-11T23:10:00Z")
        frames = list(k2.replay(*window, "BHP", batch_rows=500))
        rows = list(k2.replay(*window, "BHP", rows=True))
        assert sum(f.height for f in frames) == len(rows) > 500
        assert max(f.height for f in frames) == 500 and {r["kind"] for r in rows} == {"trade", "quote"}
        first = next(iter(k2.stream("BHP", duration=2)))
        assert first.kind == "status" and "subscribed" in first.data


def test_the_async_client_gives_the_same_answers(live: Live) -> None:
    async def run() -> tuple[int, int, int]:
        async with AsyncK2Client(live.url, api_key="client-key") as k2:
            bars = await k2.bars("BHP", START, END)
            pages = [p async for p in k2.iter_trades("BHP", START, END, page_rows=5_000)]
            replayed = [f async for f in k2.replay("2014-03-11T23:00:00Z", "2014-03-11T23:05:00Z", "BHP")]
            return bars.height, sum(p.height for p in pages), sum(f.height for f in replayed)

    bars, trades, replayed = asyncio.run(run())
    with K2Client(live.url, api_key="client-key") as k2:
        assert bars == k2.bars("BHP", START, END).height
        assert trades == k2.trades("BHP", START, END).height
        assert replayed == sum(
            f.height for f in k2.replay("2014-03-11T23:00:00Z", "2014-03-11T23:05:00Z", "BHP")
        )


def test_errors_carry_the_server_code_and_correlation_id(live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    with K2Client(live.url, api_key="wrong") as k2, pytest.raises(ApiError) as info:
        k2.trades("BHP", START, END)
    assert info.value.status == 401 and info.value.correlation_id
    monkeypatch.setenv("K2_API_KEY", "client-key")  # the key from the environment
    with K2Client(live.url) as k2, pytest.raises(ApiError) as info:
        k2.trades("BHP", END, START)
    assert (
        info.value.status == 400 and info.value.code == "invalid_parameter" and "start" in info.value.detail
    )


def test_the_notebook_runs_against_a_live_k2(live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("K2_API_URL", live.url)
    monkeypatch.setenv("K2_API_KEY", "client-key")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=120, kernel_name="python3").execute()
    text = "\n".join(
        out.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )
    assert "bars loaded:" in text and "what we knew then:" in text and "live equals history:" in text
    assert any(
        "image/png" in out.get("data", {}) for cell in notebook.cells for out in cell.get("outputs", [])
    ), "the candlestick chart was not drawn"
