"""Replay: a time range in exchange-time order, streamed in chunks, optionally paced xN.

DuckDB sorts the range (spilling to disk if it must) and hands it over in record batches; the
Python side never holds more than one batch. With a speed, a row whose exchange time is T
leaves at wall time ``t0 + (T - T_first) / speed``: rows already due go out together as one
chunk, then the stream waits until the next row is due (numpy over each batch, not per row).
``Pacer`` only says how long to wait, so the API can wait with ``asyncio.sleep`` (a blocking
sleep per stream would pin a worker thread each; forty slow replays once starved the server).
Trades and quotes can be merged into one stream; a ``kind`` column tells them apart.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from k2.query.errors import InvalidParameterError
from k2.query.files import Prune
from k2.query.params import TimeRange, TimeTravel
from k2.query.reader import LakeReader
from k2.query.sql import columns, from_us, placeholders
from k2.types import StreamKind

__all__ = ["MAX_SPEED", "MIN_SPEED", "Pacer", "ReplayStream", "replay"]

MAX_SPEED = 10_000.0
#: Slower than a tenth of exchange speed is no replay but a way to hold a connection open.
MIN_SPEED = 0.1
#: Rows due within this much wall time of each other leave as one chunk.
_CHUNK_S = 0.05


@dataclass
class ReplayStream:
    """Chunks of a replay and the snapshots they come from (known before the first chunk).

    ``chunks`` is paced with the blocking ``sleep`` given to ``replay`` (the CLI); ``batches`` is the
    same data unpaced, for callers that pace with ``Pacer`` themselves (the API, asynchronously).
    """

    chunks: Iterator[pa.RecordBatch]
    snapshots: dict[str, int | None]
    batches: Iterator[pa.RecordBatch]
    speed: float | None = None


def replay(
    reader: LakeReader,
    kinds: tuple[StreamKind, ...],
    symbols: tuple[str, ...],
    window: TimeRange,
    *,
    speed: float | None = None,
    travel: TimeTravel = TimeTravel(),
    batch_rows: int = 5_000,
    sleep: Callable[[float], None] = time.sleep,
) -> ReplayStream:
    """Stream ticks of ``kinds`` in (exchange_ts, kind, symbol, sequence) order (a quote before a trade of the same instant, as the as-of join treats it).

    Raises:
        InvalidParameterError: no kind, or a speed outside [MIN_SPEED, MAX_SPEED].
        SnapshotNotFoundError: see ``k2.query.errors`` (raised before streaming starts).
    """
    if not kinds:
        raise InvalidParameterError("kinds", "at least one of trades, quotes")
    if speed is not None and not MIN_SPEED <= speed <= MAX_SPEED:
        raise InvalidParameterError(
            "speed", f"{speed:g} is out of range: a factor in [{MIN_SPEED:g}, {MAX_SPEED:g}]"
        )
    params: list[Any] = []
    tables: dict[str, pa.Table] = {}
    selects: list[str] = []
    snapshots: dict[str, int | None] = {}
    first_scan = None
    for kind in kinds:
        kind_travel = travel if first_scan is None else reader.travel_for_second_table(first_scan, travel)
        scan = reader.scan(kind, kind_travel, Prune(symbols, window.start_us, window.end_us))
        first_scan = first_scan or scan
        snapshots[kind] = scan.snapshot_id
        source = scan.source(params, tables, kind)
        where = "exchange_ts >= ? AND exchange_ts < ?"
        if symbols:
            where += f" AND symbol IN ({placeholders(len(symbols))})"
        params += [from_us(window.start_us), from_us(window.end_us), *symbols]
        label = "trade" if kind == "trades" else "quote"
        selects.append(
            f"SELECT '{label}' AS kind, {columns(kind, lineage=False)} FROM {source} WHERE {where}"
        )
    sql = " UNION ALL BY NAME ".join(selects) + " ORDER BY exchange_ts, kind, symbol, sequence"
    batches = reader.runner.stream(
        "replay", sql, params, batch_rows=batch_rows, timeout_s=reader.limits.timeout_s, tables=tables
    )
    chunks = _paced(batches, Pacer(speed), sleep) if speed else batches
    return ReplayStream(chunks, snapshots, batches, speed)


class Pacer:
    """When the rows of a paced replay are due: ``load`` a batch, then ``wait`` and ``take`` in turn.

    Pure bookkeeping over a clock; the caller does the waiting, blocking or not.
    """

    def __init__(self, speed: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.speed = speed
        self._clock = clock
        self._started: float | None = None
        self._first_us = 0
        self._batch: pa.RecordBatch | None = None
        self._due = np.empty(0)
        self._position = 0

    def load(self, batch: pa.RecordBatch) -> None:
        """Start on the next batch (the previous one must have been taken in full)."""
        self._batch, self._position = batch, 0
        if batch.num_rows == 0:
            self._due = np.empty(0)
            return
        ts = batch.column("exchange_ts").cast(pa.int64()).to_numpy(zero_copy_only=False)
        if self._started is None:
            self._started, self._first_us = self._clock(), int(ts[0])
        self._due = (ts - self._first_us) / 1e6 / self.speed  # seconds after the start

    def wait(self) -> float | None:
        """Seconds until the next row is due (0 if it is), or None when the batch is used up."""
        if self._position >= len(self._due) or self._started is None:
            return None
        return max(0.0, float(self._due[self._position]) - (self._clock() - self._started))

    def take(self) -> pa.RecordBatch:
        """The rows due now (at least one, and those due within the next ``_CHUNK_S``)."""
        assert self._batch is not None and self._started is not None
        now = self._clock() - self._started
        stop = int(np.searchsorted(self._due, now + _CHUNK_S, side="right"))
        stop = max(stop, self._position + 1)
        out = self._batch.slice(self._position, stop - self._position)
        self._position = stop
        return out


def _paced(
    batches: Iterator[pa.RecordBatch], pacer: Pacer, sleep: Callable[[float], None]
) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        pacer.load(batch)
        while (wait := pacer.wait()) is not None:
            if wait > 0:
                sleep(wait)
            yield pacer.take()
