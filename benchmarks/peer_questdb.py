"""QuestDB for ``bench_peers``: its server jar from Maven Central, a real server on loopback, ILP ingest.

The jar is fetched the way K2 fetches Kafka's (``k2.services.jars``): Maven resolves
``org.questdb:questdb`` (honouring the user's ``settings.xml``) with strict checksums, and the jar is
then checked against the SHA-256 pinned here, so a benchmark never runs a jar nobody reviewed. The
server runs from a temporary root with every port free and on 127.0.0.1, and is stopped on exit.

Queries go to its HTTP ``/exec`` endpoint (JSON), as a client sees it; ``timings=true`` makes the
server report its own time, taken here as its in-engine figure (``execute``: compile + execute).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import polars as pl

from benchmarks.clocks import Clock
from benchmarks.peer_k2 import CHECKED, Check
from benchmarks.services import stop_process
from k2.services.process import free_port

__all__ = ["QUESTDB_VERSION", "QuestDB", "questdb_jar"]

QUESTDB_VERSION = "9.3.4"
#: SHA-256 of ``questdb-<version>.jar`` as Maven Central serves it (checked before every start).
_PINNED = {"9.3.4": "939bc53ab22f93dbaa6545143a6e7c536d4904c07b7f2d381e8eef10436be062"}
_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.k2</groupId><artifactId>k2-bench-questdb</artifactId><version>{v}</version><packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.questdb</groupId><artifactId>questdb</artifactId><version>{v}</version></dependency>
  </dependencies>
</project>
"""
_TRADES = """CREATE TABLE trades (symbol SYMBOL, exchange SYMBOL, session TIMESTAMP, sequence LONG, ts TIMESTAMP,
  ingest_ts TIMESTAMP, price DOUBLE, size DOUBLE, message_id VARCHAR, trade_id VARCHAR, qualifiers VARCHAR,
  venue VARCHAR) TIMESTAMP(ts) PARTITION BY DAY WAL DEDUP UPSERT KEYS(ts, symbol, sequence)"""
_QUOTES = """CREATE TABLE quotes (symbol SYMBOL, exchange SYMBOL, session TIMESTAMP, sequence LONG, ts TIMESTAMP,
  ingest_ts TIMESTAMP, bid_price DOUBLE, ask_price DOUBLE, bid_size DOUBLE, ask_size DOUBLE, message_id VARCHAR)
  TIMESTAMP(ts) PARTITION BY DAY WAL DEDUP UPSERT KEYS(ts, symbol, sequence)"""


def questdb_jar(cache_dir: Path, version: str = QUESTDB_VERSION) -> Path:
    """The server jar under ``cache_dir/questdb-<version>``, fetched once with Maven, checked every time.

    Raises:
        RuntimeError: no ``mvn``, Maven failed, or the jar does not match its pinned SHA-256.
    """
    root = cache_dir / f"questdb-{version}"
    jar = root / f"questdb-{version}.jar"
    if not jar.is_file():
        mvn = shutil.which("mvn")
        if mvn is None:
            raise RuntimeError("Apache Maven (`mvn`) is needed once to fetch QuestDB from Maven Central")
        staging = root.with_name(root.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        (staging / "pom.xml").write_text(_POM.format(v=version))
        cmd = [mvn, "-B", "-q", "--strict-checksums", "-f", str(staging / "pom.xml"),
               "dependency:copy-dependencies", f"-DoutputDirectory={staging}", "-DincludeScope=runtime"]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
            raise RuntimeError(f"Maven could not fetch org.questdb:questdb:{version}:\n{tail}")
        shutil.rmtree(root, ignore_errors=True)
        staging.rename(root)
    digest = hashlib.sha256(jar.read_bytes()).hexdigest()
    if digest != _PINNED.get(version):
        raise RuntimeError(
            f"{jar} does not match its pinned SHA-256 (got {digest}); remove {root} to refetch"
        )
    return jar


def _ts(t: datetime) -> str:
    return t.astimezone(UTC).strftime("'%Y-%m-%dT%H:%M:%S.%fZ'")


class QuestDB:
    """One QuestDB server process (temp root, loopback ports); ``close`` stops it.

    Raises:
        RuntimeError: the server exited or did not answer within 180 s (its log is in ``root``).
    """

    def __init__(self, jar: Path, root: Path, *, java: str = "java", heap: str = "1g") -> None:
        self.root = root
        self.http_port = free_port()
        conf = root / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "server.conf").write_text(
            f"http.bind.to=127.0.0.1:{self.http_port}\n"
            f"http.min.net.bind.to=127.0.0.1:{free_port()}\n"
            f"pg.net.bind.to=127.0.0.1:{free_port()}\n"
            f"line.tcp.net.bind.to=127.0.0.1:{free_port()}\n"
            "line.udp.enabled=false\ntelemetry.enabled=false\n"
        )
        self.log = (root / "server.log").open("wb")
        cmd = [java, f"-Xmx{heap}", "-cp", str(jar), "io.questdb.ServerMain", "-d", str(root)]
        self.process = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.http_port}", timeout=120)
        deadline = time.monotonic() + 180
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"QuestDB exited with {self.process.returncode}; see {root / 'server.log'}"
                )
            try:
                self.exec("SELECT 1")
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError("QuestDB did not answer within 180 s") from None
                time.sleep(0.5)
        print(
            f"  QuestDB {QUESTDB_VERSION} up on 127.0.0.1:{self.http_port} (pid {self.process.pid})",
            flush=True,
        )

    def exec(self, sql: str) -> dict[str, Any]:
        """One statement over ``/exec`` with the server's timings.

        Raises:
            RuntimeError: QuestDB answered with an error.
        """
        response = self.client.get("/exec", params={"query": sql, "timings": "true"})
        body: dict[str, Any] = response.json()
        if response.status_code != 200 or "error" in body:
            raise RuntimeError(f"QuestDB: {body.get('error', response.status_code)} in {sql!r}")
        return body

    def ingest(self, trades: pl.DataFrame, quotes: pl.DataFrame) -> Clock:
        """Create the tables and send both over ILP (HTTP); the clock until every row is visible (WAL applied)."""
        from questdb import Sender

        self.exec(_TRADES)
        self.exec(_QUOTES)
        # The client takes pandas only: convert before the clock starts, as the others get Arrow for free.
        batches = [(name, part.to_pandas()) for name, frame in (("trades", trades), ("quotes", quotes))
                   for part in frame.iter_slices(200_000)]  # fmt: skip
        with Clock(self.process.pid) as clock:  # the client's CPU and the server's
            with Sender.from_conf(f"http::addr=127.0.0.1:{self.http_port};auto_flush_rows=50000;") as sender:
                for name, batch in batches:
                    sender.dataframe(batch, table_name=name, symbols=["symbol", "exchange"], at="ts")
                sender.flush()
            self.wait_rows({"trades": trades.height, "quotes": quotes.height})
        return clock

    def wait_rows(self, expected: dict[str, int], timeout_s: float = 600) -> None:
        """Until each table holds its rows (the WAL applied): QuestDB acknowledges before that.

        Raises:
            RuntimeError: the rows were not all visible within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        for table, rows in expected.items():
            while (held := self.count(table)) < rows:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"QuestDB {table}: {held:,} of {rows:,} rows visible after {timeout_s} s"
                    )
                time.sleep(0.05)

    def count(self, table: str) -> int:
        return int(self.exec(f"SELECT count() FROM {table}")["dataset"][0][0])

    def resend(self, trades: pl.DataFrame) -> int:
        """Send ``trades`` again (a redelivery) and return the row count once applied: dedup keeps it."""
        from questdb import Sender

        before = self.count("trades")
        with Sender.from_conf(f"http::addr=127.0.0.1:{self.http_port};") as sender:
            sender.dataframe(trades.to_pandas(), table_name="trades", symbols=["symbol", "exchange"], at="ts")
        # Dedup makes the count a poor progress signal: wait on the WAL's own applied transaction.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            body = self.exec("SELECT writerTxn, sequencerTxn FROM wal_tables() WHERE name = 'trades'")
            applied, sequenced = body["dataset"][0]
            if applied >= sequenced:
                break
            time.sleep(0.05)
        after = self.count("trades")
        print(f"  QuestDB dedup: resent {trades.height:,} trades, rows {before:,} -> {after:,}", flush=True)
        return after

    def trades_bytes(self) -> int:
        """Bytes of the trades table's partitions as the running server reports them (``table_partitions``).

        While the server runs, the partition being written holds its column files pre-extended by
        whole append pages (16 MiB each here), so this overstates the data; see ``trades_bytes_at_rest``.
        """
        return int(self.exec("SELECT sum(diskSize) FROM table_partitions('trades')")["dataset"][0][0])

    def trades_bytes_at_rest(self) -> int:
        """Blocks allocated to the trades table once the server has stopped (WAL and sequencer left out).

        Raises:
            RuntimeError: the server is still running (its files are still pre-extended).
        """
        if self.process.poll() is None:
            raise RuntimeError("stop QuestDB first: a running writer keeps its files pre-extended")
        total = 0
        for table_dir in (self.root / "db").glob("trades~*"):
            for path in table_dir.rglob("*"):
                if path.is_file() and not path.relative_to(table_dir).parts[0].startswith(("wal", "txn_seq")):
                    total += path.stat().st_blocks * 512
        return total

    def queries(self) -> dict[str, Any]:
        """``a`` window, ``b`` 1-minute bars (SAMPLE BY), ``c`` as-of join (ASOF JOIN … TOLERANCE)."""

        def call(sql: str) -> tuple[dict[str, Any], float]:
            body = self.exec(sql)
            return body, body["timings"]["execute"] / 1e6

        def window(s: Any) -> tuple[dict[str, Any], float]:
            return call(f"SELECT * FROM trades WHERE symbol = '{s.symbol}' "
                        f"AND ts >= {_ts(s.window.start)} AND ts < {_ts(s.window.end)}")  # fmt: skip

        def bars(s: Any) -> tuple[dict[str, Any], float]:
            return call(
                "SELECT ts, first(price) open, max(price) high, min(price) low, last(price) close, "
                "sum(size) volume, sum(price * size) / sum(size) vwap, count() trades FROM trades "
                f"WHERE symbol = '{s.symbol}' AND ts >= {_ts(s.window.start)} AND ts < {_ts(s.window.end)} "
                "SAMPLE BY 1m ALIGN TO CALENDAR"
            )

        def asof(s: Any) -> tuple[dict[str, Any], float]:
            lo = _ts(s.window.start - timedelta(minutes=5))
            return call(
                "SELECT t.*, q.ts quote_ts, q.bid_price, q.ask_price, q.bid_size, q.ask_size "
                f"FROM (trades WHERE symbol = '{s.symbol}' AND ts >= {_ts(s.window.start)} "
                f"AND ts < {_ts(s.window.end)}) t "
                f"ASOF JOIN (quotes WHERE symbol = '{s.symbol}' AND ts >= {lo} AND ts < {_ts(s.window.end)}) q "
                "ON (symbol) TOLERANCE 5m"
            )

        return {"a": window, "b": bars, "c": asof}

    @staticmethod
    def check(query: str, body: dict[str, Any]) -> Check:
        """The :data:`~benchmarks.peer_k2.Check` of one ``/exec`` answer."""
        names = [c["name"] for c in body["columns"]]
        rows = body["dataset"]
        first, second = (
            sum(r[i] for r in rows if r[i] is not None) for i in map(names.index, CHECKED[query])
        )
        return len(rows), float(first), float(second)

    def close(self) -> None:
        if self.log.closed:
            return
        self.client.close()
        code = stop_process(self.process)
        self.log.close()
        print(f"  QuestDB stopped (exit {code})", flush=True)
