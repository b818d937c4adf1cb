"""K2 for ``bench_peers``: the lake built as ``bench_query`` builds it, queried in-engine and through ``k2 serve``.

The trades and quotes are appended to K2's Iceberg tables (SQLite catalog, local warehouse) in
time-ordered commits of at most K2's default ``lake.commit_rows`` (200,000), then compacted. The
HTTP figures come from a real ``k2 serve`` (uvicorn) started as its own process on a free
loopback port, reading that lake, and stopped on exit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal

import httpx
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from benchmarks.bench_query import stream_in
from benchmarks.clocks import Clock
from benchmarks.services import stop_process, wait_served
from k2.client.frames import read_arrow
from k2.lake.maintenance import compact
from k2.lake.tables import ensure_tables
from k2.query.engine import QueryEngine
from k2.query.reader import QueryLimits
from k2.services.process import free_port

__all__ = ["CHECKED", "Check", "K2Lake", "K2Serve", "arrow_check"]

_CATALOG = "bench"
#: Per query, the two columns whose sums every system's answer must share with K2's, besides its row
#: count: amounts that any engine gets right, then prices that depend on which row it picks (the
#: close of a bar: the last trade by (time, sequence); the ask of the prevailing quote).
CHECKED = {"a": ("size", "price"), "b": ("volume", "close"), "c": ("bid_price", "ask_price")}
#: (rows, sum of the first checked column, sum of the second), nulls left out of the sums.
Check = tuple[int, float, float]


class K2Lake:
    """The lake in ``path`` and an in-process query engine over it."""

    def __init__(self, path: Path) -> None:
        from pyiceberg.catalog.sql import SqlCatalog

        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        # The layout `k2 serve` expects of its data_dir: <dir>/catalog.db and <dir>/warehouse.
        self.catalog = SqlCatalog(
            _CATALOG, uri=f"sqlite:///{path}/catalog.db", warehouse=f"file://{path}/warehouse"
        )
        self.catalog.create_namespace_if_not_exists("k2")
        self.tables = ensure_tables(self.catalog, "k2")
        self.engine: QueryEngine | None = None

    def ingest(self, data: dict[str, pl.DataFrame], commit_rows: int) -> Clock:
        """Append trades then quotes in commits of ``commit_rows``; the clock of that (then compacts, untimed)."""
        with Clock() as clock:
            for kind in ("trades", "quotes"):
                commits = max(-(-data[kind].height // commit_rows), 1)
                stream_in(self.tables[kind], data[kind], commits, kind)
        for kind in ("trades", "quotes"):
            started = time.perf_counter()
            done = compact(self.tables[kind].refresh())
            print(f"  K2 compacted {kind}: {done.files_before} files -> {done.files_after} "
                  f"in {time.perf_counter() - started:.1f} s", flush=True)  # fmt: skip
        self.engine = QueryEngine(self.catalog, "k2", QueryLimits(max_rows=1_000_000, timeout_s=120))
        return clock

    def trades_bytes(self) -> int:
        """Bytes of the Parquet files in the trades table's current snapshot."""
        files = self.tables["trades"].refresh().inspect.files()
        return int(pc.sum(files["file_size_in_bytes"]).as_py())

    def queries(self) -> dict[str, Any]:
        engine = self.engine
        assert engine is not None, "ingest first"
        return {
            "a": lambda s: (engine.ticks("trades", (s.symbol,), s.window, limit=1_000_000), None),
            "b": lambda s: (engine.bars((s.symbol,), s.window, 60_000_000), None),
            "c": lambda s: (engine.trades_with_quotes((s.symbol,), s.window, 300_000_000), None),
        }

    @staticmethod
    def check(query: str, result: Any) -> Check:
        return arrow_check(query, result.table)


class K2Serve:
    """``python -m k2.cli serve`` over the lake in ``data_dir``, as its own process on a free port.

    Raises:
        RuntimeError: the server exited or did not answer within 120 s (its log is in ``data_dir``).
    """

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "K2_DATA_DIR": str(data_dir),
            "K2_LAKE__CATALOG_NAME": _CATALOG,
            "K2_API__PORT": str(self.port),
            "K2_API__RATE_LIMIT_PER_MINUTE": str(10**9),
            "K2_API__MAX_ROWS": "1000000",
            "K2_API__QUERY_TIMEOUT_S": "60",
        }
        self.log_path = data_dir / f"serve-{self.port}.log"
        self.log = self.log_path.open("wb")
        self.process = subprocess.Popen([sys.executable, "-m", "k2.cli", "serve"], env=env,
                                        stdout=self.log, stderr=subprocess.STDOUT)  # fmt: skip
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=120)
        wait_served(
            str(self.client.base_url), self.process, self.log_path, path="/openapi.json", client=self.client
        )
        print(f"  k2 serve up on 127.0.0.1:{self.port} (pid {self.process.pid})", flush=True)

    def get(self, path: str, **params: Any) -> tuple[Any, None]:
        response = self.client.get(path, params=params)
        response.raise_for_status()
        if params.get("format") == "arrow":
            return read_arrow(response.content), None
        return response.json(), None

    def queries(self, fmt: Literal["json", "arrow"] = "json") -> dict[str, Any]:
        """The three queries as a client asks them: JSON (the default) or Arrow IPC (``format=arrow``)."""

        def span(s: Any) -> dict[str, str]:
            return {"symbols": s.symbol, "start": s.window.start.isoformat(), "end": s.window.end.isoformat(),
                    "format": fmt}  # fmt: skip

        return {
            "a": lambda s: self.get("/v1/trades", **span(s), limit=1_000_000),
            "b": lambda s: self.get("/v1/bars", **span(s), interval="1m"),
            "c": lambda s: self.get("/v1/trades-with-quotes", **span(s), tolerance="5m"),
        }

    @staticmethod
    def check(query: str, body: Any) -> Check:
        if isinstance(body, pa.Table):
            return arrow_check(query, body)
        rows = body["data"] if isinstance(body, dict) else body
        first, second = (sum(float(r[c]) for r in rows if r.get(c) is not None) for c in CHECKED[query])
        return len(rows), first, second

    def close(self) -> None:
        self.client.close()
        code = stop_process(self.process)
        self.log.close()
        print(f"  k2 serve stopped (exit {code})", flush=True)


def arrow_check(query: str, table: pa.Table) -> Check:
    """The :data:`Check` of an answer held as an Arrow table (decimals summed as doubles)."""
    first, second = (float(pc.sum(table[c].cast(pa.float64())).as_py() or 0.0) for c in CHECKED[query])
    return table.num_rows, first, second
