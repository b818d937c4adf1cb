"""The Python client against reading the Parquet files directly: one symbol-day of ASX trades.

Baseline, same run: pyiceberg plans the scan (symbol and day predicates prune files and row
groups) and pyarrow reads those Parquet files in-process, which is what a researcher with the
warehouse on their own disk would do. K2: ``K2Client.trades`` over HTTP to ``k2 serve`` (uvicorn on
loopback), Arrow IPC on the wire, polars out. Goal: the client within 1.5x of the direct read.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import uvicorn
from pyiceberg.expressions import And, EqualTo, GreaterThanOrEqual, LessThan

from benchmarks.bench_query import append_stamped
from benchmarks.results import write_result
from k2.api import create_app
from k2.client import K2Client
from k2.config import load_settings
from k2.feeds import read_asx
from k2.lake import ensure_tables, open_catalog
from k2.services.process import free_port

__all__ = ["main"]

ASX_DIR = Path(__file__).resolve().parents[1] / "data" / "asx-2014-03"
SYMBOL, START, END = "RIO", "2014-03-11T20:00:00+00:00", "2014-03-12T07:00:00+00:00"  # 12 March, Sydney


def _timed(fn, runs: int) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    times, rows = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        rows = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000, rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="5 runs of each read, not 15")
    args = parser.parse_args(argv)
    runs = 5 if args.quick else 15
    logging.getLogger().setLevel(logging.WARNING)  # no access line per request in the figures
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(data_dir=Path(tmp), api={"port": free_port()})
        tables = ensure_tables(open_catalog(settings), settings.lake.namespace)
        trades = read_asx(ASX_DIR).delivery.trades
        frame = trades.with_columns(
            pl.lit(0, dtype=pl.Int32).alias("kafka_partition"),
            pl.int_range(trades.height).alias("kafka_offset"),
        )
        for day in frame.partition_by("session", maintain_order=True):  # one commit per day, like a feed
            append_stamped(tables["trades"], day.sort("symbol", "exchange_ts"))
        table = tables["trades"].refresh()

        server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=settings.api.port,
                                               log_config=None, access_log=False))  # fmt: skip
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        predicate = And(
            EqualTo("symbol", SYMBOL),
            GreaterThanOrEqual("exchange_ts", START),
            LessThan("exchange_ts", END),
        )

        def direct() -> int:
            return pl.from_arrow(table.scan(row_filter=predicate).to_arrow()).height  # type: ignore[union-attr]

        # the files planned once, outside the timing: the bare Parquet read of what the scan keeps
        files = [
            task.file.file_path.removeprefix("file://")
            for task in table.scan(row_filter=predicate).plan_files()
        ]
        filters = [("symbol", "=", SYMBOL), ("exchange_ts", ">=", pa.scalar(datetime.fromisoformat(START))),
                   ("exchange_ts", "<", pa.scalar(datetime.fromisoformat(END)))]  # fmt: skip

        def parquet() -> int:
            return pl.from_arrow(pq.read_table(files, filters=filters)).height  # type: ignore[union-attr]

        with K2Client(f"http://127.0.0.1:{settings.api.port}") as k2:

            def client() -> int:
                return k2.trades(SYMBOL, START, END).height

            client()  # the server's first query warms its plan cache, as any long-running server is
            base_ms, base_rows = _timed(direct, runs)
            file_ms, file_rows = _timed(parquet, runs)
            k2_ms, k2_rows = _timed(client, runs)
        server.should_exit = True
        thread.join(10)
    assert base_rows == file_rows == k2_rows, (base_rows, file_rows, k2_rows)
    print(
        f"one symbol-day of trades ({SYMBOL}, {k2_rows:,} rows), median of {runs} runs; ratio to the bare read:"
    )
    print(f"  bare Parquet read of the planned files (pyarrow)  {file_ms:8.1f} ms   1.00")
    print(f"  pyiceberg scan (planning + read)                  {base_ms:8.1f} ms   {base_ms / file_ms:.2f}")
    print(f"  K2Client.trades over HTTP (Arrow IPC)             {k2_ms:8.1f} ms   {k2_ms / file_ms:.2f}")
    print(f"  goal: client <= 1.5x the bare Parquet read: {'met' if k2_ms <= 1.5 * file_ms else 'NOT met'}")
    figures = {"rows": k2_rows, "runs": runs, "parquet_ms": file_ms, "pyiceberg_ms": base_ms, "client_ms": k2_ms,
               "client_ratio": k2_ms / file_ms}  # fmt: skip
    write_result("bench_client", figures, quick=args.quick)


if __name__ == "__main__":
    main()
