"""ClickHouse for ``bench_peers``, through chDB: ClickHouse's engine embedded in this process.

Tables are MergeTree ordered by (symbol, ts), in a chDB session on a temporary directory. chDB has
no server, so there is no "over HTTP" figure for it: its times are in-engine, taken in this process
around ``Session.query`` (answers as Arrow tables).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from benchmarks.clocks import Clock
from benchmarks.peer_k2 import Check, arrow_check

__all__ = ["ChDB"]

_TRADES = """CREATE TABLE b.trades (symbol LowCardinality(String), exchange LowCardinality(String), session Date32,
  sequence Int64, ts DateTime64(6, 'UTC'), ingest_ts DateTime64(6, 'UTC'), price Float64, size Float64,
  message_id String, trade_id String, qualifiers String, venue String)
  ENGINE = MergeTree ORDER BY (symbol, ts)"""
_QUOTES = """CREATE TABLE b.quotes (symbol LowCardinality(String), exchange LowCardinality(String), session Date32,
  sequence Int64, ts DateTime64(6, 'UTC'), ingest_ts DateTime64(6, 'UTC'), bid_price Float64, ask_price Float64,
  bid_size Float64, ask_size Float64, message_id String)
  ENGINE = MergeTree ORDER BY (symbol, ts)"""


def _ts(t: datetime) -> str:
    return t.astimezone(UTC).strftime("toDateTime64('%Y-%m-%d %H:%M:%S.%f', 6, 'UTC')")


class ChDB:
    """A chDB session with the trades and quotes tables."""

    def __init__(self, path: Path) -> None:
        import chdb
        from chdb import session

        self.version = chdb.__version__
        self.session = session.Session(str(path))
        self.session.query("CREATE DATABASE IF NOT EXISTS b")
        print(f"  chDB {self.version} session in {path}", flush=True)

    def ingest(self, trades: pl.DataFrame, quotes: pl.DataFrame) -> Clock:
        """Create the tables and INSERT both in 200,000-row batches; the clock of that (then merges, untimed)."""
        self.session.query(_TRADES)
        self.session.query(_QUOTES)
        with Clock() as clock:  # chDB runs in this process: its CPU is this process's
            for name, frame in (("trades", trades), ("quotes", quotes)):
                for part in frame.iter_slices(200_000):
                    batch = part.to_arrow()  # noqa: F841 - read by name by chDB's Python() table function
                    self.session.query(f"INSERT INTO b.{name} SELECT * FROM Python(batch)")
        # Merge the inserted parts into one per partition, untimed, as K2's lake is compacted untimed.
        for name in ("trades", "quotes"):
            started = time.perf_counter()
            self.session.query(f"OPTIMIZE TABLE b.{name} FINAL")
            print(f"  chDB merged {name} in {time.perf_counter() - started:.1f} s", flush=True)
        return clock

    def arrow(self, sql: str) -> pa.Table:
        return self.session.query(sql, "ArrowTable")  # type: ignore[no-any-return]

    def count(self, table: str) -> int:
        return int(self.arrow(f"SELECT count() AS n FROM b.{table}")["n"][0].as_py())

    def trades_bytes(self) -> int:
        """Bytes on disk of the trades table's active parts (system.parts)."""
        sql = "SELECT sum(bytes_on_disk) AS n FROM system.parts WHERE database = 'b' AND table = 'trades' AND active"
        return int(self.arrow(sql)["n"][0].as_py())

    def queries(self) -> dict[str, Any]:
        """``a`` window, ``b`` 1-minute bars, ``c`` as-of join (ASOF LEFT JOIN, stale after 5 minutes)."""

        def window(s: Any) -> tuple[pa.Table, None]:
            return self.arrow(f"SELECT * FROM b.trades WHERE symbol = '{s.symbol}' AND ts >= {_ts(s.window.start)} "
                              f"AND ts < {_ts(s.window.end)} ORDER BY ts, sequence"), None  # fmt: skip

        def bars(s: Any) -> tuple[pa.Table, None]:
            return self.arrow(
                "SELECT toStartOfMinute(ts) AS start, argMin(price, (ts, sequence)) AS open, max(price) AS high, "
                "min(price) AS low, argMax(price, (ts, sequence)) AS close, sum(size) AS volume, "
                "sum(price * size) / sum(size) AS vwap, count() AS trades FROM b.trades "
                f"WHERE symbol = '{s.symbol}' AND ts >= {_ts(s.window.start)} AND ts < {_ts(s.window.end)} "
                "GROUP BY start ORDER BY start"
            ), None

        def asof(s: Any) -> tuple[pa.Table, None]:
            # The prevailing quote as K2 defines it: of quotes sharing a timestamp, the highest sequence.
            lo = _ts(s.window.start - timedelta(minutes=5))
            return self.arrow(
                "SELECT t.*, toUnixTimestamp64Micro(t.ts) - toUnixTimestamp64Micro(q.ts) AS quote_age_us, "
                "if(quote_age_us <= 300000000, q.ts, NULL) AS quote_ts, "
                "if(quote_age_us <= 300000000, q.bid, NULL) AS bid_price, "
                "if(quote_age_us <= 300000000, q.ask, NULL) AS ask_price FROM ("
                f"SELECT * FROM b.trades WHERE symbol = '{s.symbol}' AND ts >= {_ts(s.window.start)} "
                f"AND ts < {_ts(s.window.end)}) AS t ASOF LEFT JOIN ("
                "SELECT symbol, ts, argMax(bid_price, sequence) AS bid, argMax(ask_price, sequence) AS ask "
                f"FROM b.quotes WHERE symbol = '{s.symbol}' AND ts >= {lo} AND ts < {_ts(s.window.end)} "
                "GROUP BY symbol, ts) AS q ON t.symbol = q.symbol AND t.ts >= q.ts "
                "ORDER BY t.ts, t.sequence SETTINGS join_use_nulls = 1"
            ), None

        return {"a": window, "b": bars, "c": asof}

    @staticmethod
    def check(query: str, table: pa.Table) -> Check:
        return arrow_check(query, table)

    def close(self) -> None:
        self.session.close()
