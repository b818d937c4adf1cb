"""Tick queries: trades or quotes for symbols and a window, paged; the latest tick per symbol."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from k2.query.cursor import Cursor, fingerprint
from k2.query.files import Prune
from k2.query.params import Order, TimeRange, TimeTravel, epoch_us
from k2.query.reader import LakeReader, Result, Scan
from k2.query.rows import hot_rows
from k2.query.sql import columns, from_us, order_by, placeholders
from k2.types import StreamKind

__all__ = ["latest", "newest_us", "ticks"]

_DAY_US = 86_400_000_000


def ticks(
    reader: LakeReader,
    kind: StreamKind,
    symbols: tuple[str, ...],
    window: TimeRange,
    *,
    order: Order = "asc",
    limit: int = 1000,
    cursor: str | None = None,
    travel: TimeTravel = TimeTravel(),
) -> Result:
    """One page of ticks in (exchange_ts, symbol, sequence) order, oldest or newest first.

    The page is read from one snapshot; its ``next_cursor`` pins that snapshot, so later pages
    neither skip nor repeat rows while commits keep landing.

    Raises:
        InvalidParameterError, InvalidCursorError, CapExceededError, SnapshotNotFoundError,
        QueryTimeoutError: see ``k2.query.errors``.
    """
    reader.limits.check_limit(limit)
    query_id = fingerprint(kind, ",".join(sorted(symbols)), window.start_us, window.end_us, order)
    start_us, end_us = window.start_us, window.end_us
    after: Cursor | None = None
    if cursor:
        after = Cursor.decode(cursor, query=query_id)
        travel = TimeTravel(snapshot_id=after.snapshot_id) if after.snapshot_id is not None else travel
        if order == "asc":
            start_us = max(start_us, after.ts_us)
        else:
            end_us = min(end_us, after.ts_us + 1)
    scan = reader.scan(kind, travel, Prune(symbols, start_us, end_us))
    hot = hot_rows(reader, scan, symbols, start_us, end_us) if scan.files else None
    if hot is not None:
        out = _page(hot, kind, order, after, limit)
    else:
        out = _page_sql(reader, scan, kind, symbols, start_us, end_us, order, after, limit)
    next_cursor = None
    if out.num_rows > limit:
        out = out.slice(0, limit)
        last = out.slice(limit - 1, 1).select(["exchange_ts", "symbol", "sequence"]).to_pylist()[0]
        next_cursor = Cursor(
            ts_us=epoch_us(last["exchange_ts"]), symbol=last["symbol"], sequence=last["sequence"],
            # a cut (as of T past the dense window) is not a snapshot: later pages resolve T again
            snapshot_id=scan.snapshot_id if scan.until_ms is None else None, order=order, query=query_id,
        ).encode()  # fmt: skip
    return Result(out, {kind: scan.snapshot_id}, next_cursor)


def _page(rows: pa.Table, kind: StreamKind, order: Order, after: Cursor | None, limit: int) -> pa.Table:
    """The page from hot rows, already cut to the symbols and window: cursor, sort, limit in Arrow.

    Same rows, order and types as the SQL path (a test runs every tick query both ways).
    """
    rows = rows.select(columns(kind).split(", "))
    if after is not None:
        ts = pc.cast(rows["exchange_ts"], pa.int64())
        later, sym, seq = (pc.greater, pc.greater, pc.greater) if order == "asc" else (pc.less,) * 3
        key = pc.or_(
            later(ts, after.ts_us),
            pc.and_(
                pc.equal(ts, after.ts_us),
                pc.or_(
                    sym(rows["symbol"], after.symbol),
                    pc.and_(pc.equal(rows["symbol"], after.symbol), seq(rows["sequence"], after.sequence)),
                ),
            ),
        )
        rows = rows.filter(key)
    direction = "descending" if order == "desc" else "ascending"
    rows = rows.sort_by([("exchange_ts", direction), ("symbol", direction), ("sequence", direction)])
    return rows.slice(0, limit + 1).combine_chunks()


def _page_sql(
    reader: LakeReader,
    scan: Scan,
    kind: StreamKind,
    symbols: tuple[str, ...],
    start_us: int,
    end_us: int,
    order: Order,
    after: Cursor | None,
    limit: int,
) -> pa.Table:
    params: list[Any] = []
    tables: dict[str, pa.Table] = {}
    source = scan.source(params, tables, "t")
    sql = (
        f"SELECT {columns(kind)} FROM {source} WHERE symbol IN ({placeholders(len(symbols))}) "
        "AND exchange_ts >= ? AND exchange_ts < ?"
    )
    params += [*symbols, from_us(start_us), from_us(end_us)]
    if after is not None:
        op = ">" if order == "asc" else "<"
        sql += f" AND (exchange_ts, symbol, sequence) {op} (?, ?, ?)"
        params += [from_us(after.ts_us), after.symbol, after.sequence]
    sql += f" {order_by(order, 'exchange_ts', 'symbol', 'sequence')} LIMIT ?"
    params.append(limit + 1)
    return reader.runner.table(
        kind, sql, params, timeout_s=reader.limits.timeout_s, tables=tables, files=len(scan.files)
    )


def newest_us(
    reader: LakeReader, kind: StreamKind, symbols: tuple[str, ...], travel: TimeTravel = TimeTravel()
) -> int | None:
    """The newest exchange time (epoch µs) of ``symbols`` in ``kind`` (None: no row).

    One table's part of ``latest``: the hybrid engine anchors a recent window on it for every
    new (symbols, snapshot), and reading the other table too cost that first query 50-180 ms.
    When the newest files are in the hot-row cache (warm-up and prefetch put them there) it is
    read from their symbol index, newest file first, without a query; otherwise from Parquet.

    Raises:
        SnapshotNotFoundError, QueryTimeoutError: see ``k2.query.errors``.
    """
    hot = _newest_hot(reader, kind, symbols, travel)
    if hot is not None:
        return hot[0]
    found, _ = _latest_of(reader, kind, symbols, travel)
    values = [epoch_us(v) for v in found.column("exchange_ts").to_pylist() if v is not None]
    return max(values) if values else None


def _newest_hot(
    reader: LakeReader, kind: StreamKind, symbols: tuple[str, ...], travel: TimeTravel
) -> tuple[int | None] | None:
    """``newest_us`` from the hot-row cache alone, or None when a file it needs is not cached.

    Files are visited by their exchange_ts upper bound, newest first; once that bound is below the
    newest time found, no further file can hold a newer row. Each cached file is sorted by
    (symbol, exchange_ts, sequence), so a symbol's newest row in it is the last of its range.
    """
    if not symbols or reader.rows.max_rows <= 0:
        return None
    table, state = reader.state(kind, travel)
    if state.until_ms is not None:  # a cut (as_of) holds part of a file: the cache holds whole ones
        return None
    chosen = reader.fileset(kind, table, state.snapshot).select(Prune(symbols))
    best: int | None = None
    for i in np.argsort(-chosen.ts_max, kind="stable"):
        if best is not None and int(chosen.ts_max[i]) < best:
            break
        item = reader.rows.get(str(chosen.paths[i]))
        if item is None:
            return None
        for symbol in symbols:
            lo, hi = item.index.get(symbol, (0, 0))
            if hi > lo:
                newest = int(item.ts[hi - 1])
                best = newest if best is None else max(best, newest)
    return (best,)


def _latest_of(
    reader: LakeReader, kind: StreamKind, symbols: tuple[str, ...], travel: TimeTravel
) -> tuple[pa.Table, int | None]:
    """Newest row per symbol, reading files newest-first until no older file can change the answer.

    Files are ordered by their exchange_ts upper bound; once every requested symbol has a row
    and the next file's upper bound is older than the oldest of those rows, the rest are skipped.
    Without symbols: every symbol seen in the last day of data, in one pass.
    """
    table, state = reader.state(kind, travel)
    fileset = reader.fileset(kind, table, state.snapshot)
    chosen = fileset.select(Prune(symbols)) if symbols else fileset
    scan = reader.make_scan(kind, table, state.snapshot, [], until_ms=state.until_ms)
    order = np.argsort(-chosen.ts_max, kind="stable")
    if not symbols and len(order):
        order = order[chosen.ts_max[order] >= int(chosen.ts_max[order[0]]) - _DAY_US]
    found: pa.Table | None = None
    position, step = 0, 4 if symbols else max(len(order), 1)
    while True:
        batch = chosen.paths[order[position : position + step]].tolist()
        position += step
        step *= 2
        found = _newest_rows(reader, kind, replace(scan, files=batch), symbols, found)
        if position >= len(order):
            return found, scan.snapshot_id
        if set(found.column("symbol").to_pylist()).issuperset(symbols):
            oldest = min(epoch_us(t) for t in found.column("exchange_ts").to_pylist())
            if int(chosen.ts_max[order[position]]) < oldest:
                return found, scan.snapshot_id


def _newest_rows(
    reader: LakeReader, kind: StreamKind, scan: Scan, symbols: tuple[str, ...], previous: pa.Table | None
) -> pa.Table:
    params: list[Any] = []
    tables: dict[str, pa.Table] = {}
    source = scan.source(params, tables, "t")
    where = f"WHERE symbol IN ({placeholders(len(symbols))})" if symbols else ""
    params += list(symbols)
    union = ""
    if previous is not None:
        tables["_previous"] = previous
        union = "UNION ALL SELECT * FROM _previous"
    sql = (
        f"SELECT * FROM (SELECT {columns(kind, lineage=False)} FROM {source} {where} {union}) "
        "QUALIFY row_number() OVER (PARTITION BY symbol ORDER BY exchange_ts DESC, sequence DESC) = 1"
    )
    return reader.runner.table(
        "latest", sql, params, timeout_s=reader.limits.timeout_s, tables=tables, files=len(scan.files)
    )


def latest(reader: LakeReader, symbols: tuple[str, ...], travel: TimeTravel = TimeTravel()) -> Result:
    """The last trade and the last quote of each symbol, side by side.

    Raises:
        SnapshotNotFoundError, QueryTimeoutError, CapExceededError: see ``k2.query.errors``.
    """
    trades, trades_snap = _latest_of(reader, "trades", symbols, travel)
    quotes_travel = travel
    if travel.snapshot_id is not None:  # a snapshot id names a trades snapshot
        table, snap = reader.snapshot("trades", travel)
        quotes_travel = reader.travel_for_second_table(reader.make_scan("trades", table, snap, []), travel)
    quotes, quotes_snap = _latest_of(reader, "quotes", symbols, quotes_travel)
    sql = """
        SELECT coalesce(t.symbol, q.symbol) AS symbol, coalesce(t.exchange, q.exchange) AS exchange,
               t.exchange_ts AS trade_ts, t.price, t.size, t.sequence AS trade_sequence,
               q.exchange_ts AS quote_ts, q.bid_price, q.ask_price, q.bid_size, q.ask_size,
               q.sequence AS quote_sequence
        FROM _t t FULL OUTER JOIN _q q ON t.symbol = q.symbol
        ORDER BY symbol
    """
    out = reader.runner.table(
        "latest", sql, [], timeout_s=reader.limits.timeout_s, tables={"_t": trades, "_q": quotes}
    )
    return Result(reader.limits.check_rows(out, "latest"), {"trades": trades_snap, "quotes": quotes_snap})
