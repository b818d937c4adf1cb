"""Replay: a time range in exchange-time order, streamed in chunks, optionally paced xN.

DuckDB sorts the range (spilling to disk if it must) and hands it over in record batches; the
Python side never holds more than one batch. With a speed, a row whose exchange time is T
leaves at wall time ``t0 + (T - T_first) / speed``: rows already due go out together as one
chunk, then the stream sleeps until the next row is due (numpy over each batch, not per row).
Trades and quotes can be merged into one stream; a ``kind`` column tells them apart.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from k2.query.errors import InvalidParameterError
from k2.query.files import Prune
from k2.query.params import TimeRange, TimeTravel
from k2.query.reader import LakeReader
from k2.query.sql import columns, from_us, placeholders

__all__ = ["MAX_SPEED", "ReplayStream", "replay"]

MAX_SPEED = 10_000.0
#: Rows due within this much wall time of each other leave as one chunk.
_CHUNK_S = 0.05


@dataclass
class ReplayStream:
    """Chunks of a replay and the snapshots they come from (known before the first chunk)."""

    chunks: Iterator[pa.RecordBatch]
    snapshots: dict[str, int | None]


def replay(
    reader: LakeReader,
    kinds: tuple[Literal["trades", "quotes"], ...],
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
        InvalidParameterError: no kind, or a speed outside (0, MAX_SPEED].
        SnapshotNotFoundError: see ``k2.query.errors`` (raised before streaming starts).
    """
    if not kinds:
        raise InvalidParameterError("kinds", "at least one of trades, quotes")
    if speed is not None and not 0 < speed <= MAX_SPEED:
        raise InvalidParameterError("speed", f"{speed:g} is out of range: a factor in (0, {MAX_SPEED:g}]")
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
    chunks = _paced(batches, speed, sleep) if speed else batches
    return ReplayStream(chunks, snapshots)


def _paced(
    batches: Iterator[pa.RecordBatch], speed: float, sleep: Callable[[float], None]
) -> Iterator[pa.RecordBatch]:
    started: float | None = None
    first_us = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        ts = batch.column("exchange_ts").cast(pa.int64()).to_numpy(zero_copy_only=False)
        if started is None:
            started, first_us = time.monotonic(), int(ts[0])
        due = (ts - first_us) / 1e6 / speed  # seconds after the start when each row is due
        position = 0
        while position < len(due):
            wait = due[position] - (time.monotonic() - started)
            if wait > 0:
                sleep(wait)
            now = time.monotonic() - started
            stop = int(np.searchsorted(due, now + _CHUNK_S, side="right"))
            stop = max(stop, position + 1)
            yield batch.slice(position, stop - position)
            position = stop
