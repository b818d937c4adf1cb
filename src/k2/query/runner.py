"""DuckDB execution: one in-process database, a cursor per query, a timer that interrupts it.

SQL text reaching this module is built by K2 from constant fragments; every value a caller
supplied travels as a bound parameter. Each query gets its own cursor (a DuckDB connection to the
shared database), so concurrent API requests neither share state nor interrupt each other, and
Arrow tables registered for one query are invisible to the others.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import duckdb
import pyarrow as pa

from k2.observability.logging import get_logger
from k2.observability.metrics import REGISTRY, Counter, Histogram
from k2.query.errors import QueryBusyError, QueryError, QueryTimeoutError

__all__ = ["QUERY_SECONDS", "DuckRunner", "normalise"]

log = get_logger(__name__)

QUERY_SECONDS = Histogram(
    "k2_query_seconds",
    "DuckDB execution time per query kind",
    ["query"],
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
QUERY_FILES = Counter(
    "k2_query_files_scanned_total", "Parquet files handed to DuckDB", ["query"], registry=REGISTRY
)
QUERY_TIMEOUTS = Counter("k2_query_timeouts_total", "Queries interrupted", ["query"], registry=REGISTRY)


def normalise(data: Any) -> Any:
    """Plain ``string`` columns and 'UTC' timestamps, whichever path produced the Arrow data.

    DuckDB labels UTC 'Etc/UTC'; Polars hands back large or view strings. Results are cast to one
    set of types (the contract's), so every path and format agrees. A metadata-only cast for
    timestamps; strings are rewritten only when they are not plain already.
    """
    fields = []
    for field in data.schema:
        dtype = field.type
        if pa.types.is_large_string(dtype) or pa.types.is_string_view(dtype):
            dtype = pa.string()
        elif pa.types.is_timestamp(dtype) and dtype.tz in ("Etc/UTC", "Etc/Universal"):
            dtype = pa.timestamp(dtype.unit, "UTC")
        fields.append(pa.field(field.name, dtype, field.nullable, field.metadata))
    schema = pa.schema(fields, metadata=data.schema.metadata)
    return data if schema.equals(data.schema) else data.cast(schema)


#: How long a query waits for a free slot before it is refused (a mid-stream batch waits longer).
_SLOT_WAIT_S = 0.2


class DuckRunner:
    """Runs parameterised SQL over Parquet files and Arrow tables, with a per-query timeout.

    At most ``max_concurrent`` queries run at once; the next one is refused with
    ``QueryBusyError`` (503) after a short wait instead of queueing without bound. ``memory_limit``
    and ``temp_directory`` bound DuckDB itself: past the limit it spills to the directory (K2's
    data dir, not the working directory), and past that the query fails rather than the process.
    """

    def __init__(
        self,
        *,
        threads: int | None = None,
        memory_limit: str | None = None,
        temp_directory: str | None = None,
        max_concurrent: int = 8,
    ) -> None:
        self._db = duckdb.connect(":memory:")
        self._db.execute("SET TimeZone = 'UTC'")
        # Streaming tables are read again and again: keep Parquet footers in memory.
        self._db.execute("SET parquet_metadata_cache = true")
        if threads:
            self._db.execute(f"SET threads = {int(threads)}")
        if memory_limit:
            self._db.execute("SET memory_limit = ?", [memory_limit])
        if temp_directory:
            self._db.execute("SET temp_directory = ?", [temp_directory])
        self.max_concurrent = max_concurrent
        self._slots = threading.BoundedSemaphore(max_concurrent)

    def register_filesystem(self, filesystem: Any) -> None:
        """Let DuckDB read a scheme through an fsspec filesystem (S3, k2.query.storage); once each."""
        names = set(self._db.list_filesystems())
        protocols = filesystem.protocol if isinstance(filesystem.protocol, tuple) else (filesystem.protocol,)
        if not names.intersection({type(filesystem).__name__, *protocols}):
            self._db.register_filesystem(filesystem)

    def setting(self, name: str) -> Any:
        """A DuckDB setting's current value (memory_limit, temp_directory…)."""
        row = self._db.cursor().execute("SELECT current_setting(?)", [name]).fetchone()
        return row[0] if row else None

    @contextmanager
    def _slot(self, query: str, wait_s: float = _SLOT_WAIT_S) -> Iterator[None]:
        if not self._slots.acquire(timeout=wait_s):
            raise QueryBusyError(query, self.max_concurrent)
        try:
            yield
        finally:
            self._slots.release()

    def close(self) -> None:
        self._db.close()

    def table(
        self,
        query: str,
        sql: str,
        params: Sequence[Any],
        *,
        timeout_s: float | None,
        tables: Mapping[str, pa.Table] | None = None,
        files: int = 0,
    ) -> pa.Table:
        """Run a query to completion and return its result as an Arrow table.

        Raises:
            QueryTimeoutError: the query ran past ``timeout_s`` and was interrupted.
            QueryError: DuckDB failed (I/O, a corrupt file…); details go to the log.
        """
        started = time.perf_counter()
        QUERY_FILES.labels(query).inc(files)
        cur = self._db.cursor()
        try:
            for name, table in (tables or {}).items():
                cur.register(name, table)
            with self._slot(query), self._guard(query, cur, timeout_s):
                result = cur.sql(sql, params=list(params))
                out = normalise(result.to_arrow_table()) if result is not None else pa.table({})
        finally:
            cur.close()
        QUERY_SECONDS.labels(query).observe(time.perf_counter() - started)
        return out

    def stream(
        self,
        query: str,
        sql: str,
        params: Sequence[Any],
        *,
        batch_rows: int,
        timeout_s: float | None,
        tables: Mapping[str, pa.Table] | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """Yield the result in record batches of about ``batch_rows``, never holding all of it.

        The timeout applies to each batch: a slow consumer (paced replay) is not a slow query.

        Raises:
            QueryTimeoutError: producing one batch took longer than ``timeout_s``.
            QueryError: DuckDB failed.
        """
        cur = self._db.cursor()
        try:
            for name, table in (tables or {}).items():
                cur.register(name, table)
            with self._slot(query), self._guard(query, cur, timeout_s):
                relation = cur.sql(sql, params=list(params))
                reader = relation.to_arrow_reader(batch_rows) if relation is not None else None
            if reader is None:
                return
            while True:
                # A stream already under way waits its turn rather than breaking off.
                with self._slot(query, timeout_s or 60.0), self._guard(query, cur, timeout_s):
                    try:
                        batch = reader.read_next_batch()
                    except StopIteration:
                        return
                yield normalise(batch)
        finally:
            cur.close()

    @contextmanager
    def _guard(self, query: str, cur: duckdb.DuckDBPyConnection, timeout_s: float | None) -> Iterator[None]:
        watchdog = _Watchdog(cur, timeout_s) if timeout_s else None
        try:
            yield
            if watchdog is not None and watchdog.expired.is_set():
                # The deadline passed but the interrupt found nothing running yet (or arrived
                # as the query finished): the caller still waited too long.
                raise duckdb.InterruptException("deadline passed")
        except duckdb.InterruptException as exc:
            QUERY_TIMEOUTS.labels(query).inc()
            raise QueryTimeoutError(query, timeout_s or 0.0) from exc
        except duckdb.Error as exc:
            log.error("query failed", query=query, error=str(exc))
            raise QueryError(f"the {query} query failed: {type(exc).__name__}") from exc
        finally:
            if watchdog is not None:
                watchdog.stop()


class _Watchdog:
    """Interrupts a cursor once its deadline passes, and keeps interrupting until stopped.

    DuckDB's ``interrupt`` only stops a query that is running: one call that lands between two
    statements (or before the first starts) is lost, so the watchdog repeats it every 10 ms.
    """

    def __init__(self, cur: duckdb.DuckDBPyConnection, timeout_s: float) -> None:
        self.expired = threading.Event()
        self._done = threading.Event()
        self._cur = cur
        self._thread = threading.Thread(
            target=self._run, args=(timeout_s,), name="k2-query-timeout", daemon=True
        )
        self._thread.start()

    def _run(self, timeout_s: float) -> None:
        if self._done.wait(timeout_s):
            return
        self.expired.set()
        while not self._done.is_set():
            self._cur.interrupt()
            self._done.wait(0.01)

    def stop(self) -> None:
        self._done.set()
