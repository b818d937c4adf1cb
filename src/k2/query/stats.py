"""Per symbol and session: row counts, first and last tick, and sequence gaps.

Counts come from per-file partials (``k2.query.partials``), so the summary of a whole table
costs a scan once and a merge afterwards. Gaps come from the ``sequence_gaps`` event log: a gap
is one ``opened`` event, and it is recovered when a ``recovered`` event repeats its range.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any, Literal

import polars as pl
import pyarrow as pa

from k2.lake.tables import GAPS
from k2.query.errors import CapExceededError, InvalidParameterError
from k2.query.files import Prune
from k2.query.params import TimeTravel
from k2.query.partials import PartialCache, partials_for
from k2.query.reader import LakeReader, Result, Scan
from k2.query.sql import placeholders
from k2.types import StreamKind

__all__ = ["GapStatus", "SessionRange", "gap_counts", "gaps", "symbol_days"]

GapStatus = Literal["open", "recovered", "pending", "all"]
_EPOCH_DAY = date(1970, 1, 1)


class SessionRange:
    """An inclusive range of trading sessions (exchange-local dates); either end may be open."""

    def __init__(self, first: date | None, last: date | None, *, max_days: float | None) -> None:
        """Raises:
        InvalidParameterError: last before first.
        CapExceededError: more sessions than ``max_days``.
        """
        if first is not None and last is not None:
            if last < first:
                raise InvalidParameterError("end", f"{last} is before start {first}")
            if max_days is not None and (last - first).days + 1 > max_days:
                raise CapExceededError(
                    f"{(last - first).days + 1} sessions requested; at most {max_days:g} days per query "
                    "(api.max_range_days)",
                    cap="api.max_range_days",
                    limit=max_days,
                    requested=(last - first).days + 1,
                )
        self.first, self.last = first, last

    def prune(self, symbols: tuple[str, ...]) -> Prune:
        # A session is a local date: its ticks lie within a day either side in UTC.
        def us(d: date) -> int:
            return (d - _EPOCH_DAY).days * 86_400_000_000

        return Prune(
            symbols,
            start_us=us(self.first - timedelta(days=1)) if self.first else None,
            end_us=us(self.last + timedelta(days=2)) if self.last else None,
            session_min=(self.first - _EPOCH_DAY).days if self.first else None,
            session_max=(self.last - _EPOCH_DAY).days if self.last else None,
        )

    def where(self, params: list[Any], column: str = "session") -> str:
        clauses = []
        if self.first:
            clauses.append(f"{column} >= ?")
            params.append(self.first)
        if self.last:
            clauses.append(f"{column} <= ?")
            params.append(self.last)
        return " AND ".join(clauses) or "TRUE"


def _count_sql(params: list[Any]) -> str:
    return """
        SELECT filename, exchange, symbol, session, count(*) AS n,
               min(exchange_ts) AS first_ts, max(exchange_ts) AS last_ts
        FROM read_parquet(?, filename = true)
        GROUP BY filename, exchange, symbol, session
    """


def _counts(
    reader: LakeReader,
    cache: PartialCache,
    kind: str,
    sessions: SessionRange,
    symbols: tuple[str, ...],
    travel: TimeTravel,
) -> tuple[pa.Table, Scan]:
    scan = reader.scan(kind, travel, sessions.prune(symbols))
    empty = pa.schema([
        ("exchange", pa.string()), ("symbol", pa.string()), ("session", pa.date32()), ("n", pa.int64()),
        ("first_ts", pa.timestamp("us", "UTC")), ("last_ts", pa.timestamp("us", "UTC")),
    ])  # fmt: skip
    table = partials_for(reader, cache, scan, ("counts",), f"{kind}_counts", _count_sql, empty)
    if table.num_rows == 0:
        table = empty.empty_table()
    return table, scan


def symbol_days(
    reader: LakeReader,
    cache: PartialCache,
    symbols: tuple[str, ...],
    sessions: SessionRange,
    *,
    travel: TimeTravel = TimeTravel(),
) -> Result:
    """Trades and quotes per (symbol, session) with first/last times and gap counts.

    Raises:
        CapExceededError: more rows than ``max_rows``.
        SnapshotNotFoundError, QueryTimeoutError: see ``k2.query.errors``.
    """
    trades, trades_scan = _counts(reader, cache, "trades", sessions, symbols, travel)
    # A snapshot id names a trades snapshot: read the others as they were when it was committed.
    others = reader.travel_for_second_table(trades_scan, travel)
    quotes, quotes_scan = _counts(reader, cache, "quotes", sessions, symbols, others)
    gap_rows = gaps(reader, symbols, sessions, travel=others).table
    params: list[Any] = []
    where_t = _where(symbols, sessions, params)  # binds in text order: t's WHERE, then q's
    where_q = _where(symbols, sessions, params)
    params.append(reader.limits.max_rows + 1)
    sql = f"""
        WITH t AS (
            SELECT exchange, symbol, session, sum(n) AS trades, min(first_ts) AS first_trade,
                   max(last_ts) AS last_trade
            FROM _t WHERE {where_t} GROUP BY exchange, symbol, session
        ), q AS (
            SELECT exchange, symbol, session, sum(n) AS quotes, min(first_ts) AS first_quote,
                   max(last_ts) AS last_quote
            FROM _q WHERE {where_q} GROUP BY exchange, symbol, session
        ), g AS (
            SELECT exchange, symbol, session,
                   count(*) FILTER (WHERE status = 'open') AS open_gaps,
                   count(*) FILTER (WHERE status = 'recovered') AS recovered_gaps,
                   coalesce(sum(size) FILTER (WHERE status = 'open'), 0) AS missing
            FROM _g GROUP BY exchange, symbol, session
        ), keys AS (
            SELECT exchange, symbol, session FROM t UNION SELECT exchange, symbol, session FROM q
        )
        SELECT k.symbol, k.exchange, k.session,
               coalesce(t.trades, 0)::BIGINT AS trades, t.first_trade, t.last_trade,
               coalesce(q.quotes, 0)::BIGINT AS quotes, q.first_quote, q.last_quote,
               coalesce(g.open_gaps, 0)::BIGINT AS open_gaps,
               coalesce(g.recovered_gaps, 0)::BIGINT AS recovered_gaps,
               coalesce(g.missing, 0)::BIGINT AS missing
        FROM keys k
        LEFT JOIN t USING (exchange, symbol, session)
        LEFT JOIN q USING (exchange, symbol, session)
        LEFT JOIN g USING (exchange, symbol, session)
        ORDER BY k.symbol, k.session, k.exchange
        LIMIT ?
    """
    out = reader.runner.table(
        "symbols", sql, params, timeout_s=reader.limits.timeout_s,
        tables={"_t": trades, "_q": quotes, "_g": gap_rows},
    )  # fmt: skip
    snapshots = {"trades": trades_scan.snapshot_id, "quotes": quotes_scan.snapshot_id}
    return Result(reader.limits.check_rows(out, "symbols"), snapshots)


def _where(symbols: tuple[str, ...], sessions: SessionRange, params: list[Any]) -> str:
    clauses = []
    if symbols:
        clauses.append(f"symbol IN ({placeholders(len(symbols))})")
        params += list(symbols)
    clauses.append(sessions.where(params))
    return " AND ".join(clauses)


def gaps(
    reader: LakeReader,
    symbols: tuple[str, ...],
    sessions: SessionRange,
    *,
    kind: StreamKind | None = None,
    status: GapStatus = "all",
    travel: TimeTravel = TimeTravel(),
    pending: pl.DataFrame | None = None,
) -> Result:
    """Sequence gaps with their state (open or recovered), oldest session first.

    ``pending`` (``k2.state.pending.PENDING_SCHEMA``): holes the sequence state holds that are not
    recorded yet; shown with status ``pending`` (``detected_at`` = when the hole opened) under
    ``status`` "pending" or "all". They come from the state store as it is now, whatever ``travel``.

    Raises:
        CapExceededError: more gaps than ``max_rows``.
        SnapshotNotFoundError, QueryTimeoutError: see ``k2.query.errors``.
    """
    scan = reader.scan(GAPS, travel, sessions.prune(symbols))
    params: list[Any] = []
    tables: dict[str, pa.Table] = {}
    source = scan.source(params, tables, "g")
    where = [sessions.where(params)]
    if symbols:
        where.append(f"symbol IN ({placeholders(len(symbols))})")
        params += list(symbols)
    if kind is not None:
        where.append("kind = ?")
        params.append(kind)
    params += [status, status, reader.limits.max_rows + 1]
    sql = f"""
        WITH ev AS (SELECT * FROM {source} WHERE {" AND ".join(where)}),
        opened AS (SELECT * FROM ev WHERE event = 'opened'),
        rec AS (
            SELECT kind, exchange, symbol, session, first_missing, last_missing,
                   min(recovered_at) AS recovered_at, arg_min(recovered_by, recovered_at) AS recovered_by
            FROM ev WHERE event = 'recovered'
            GROUP BY kind, exchange, symbol, session, first_missing, last_missing
        ), joined AS (
            SELECT o.kind, o.exchange, o.symbol, o.session, o.first_missing, o.last_missing, o.size,
                   o.detected_at, r.recovered_at, r.recovered_by,
                   CASE WHEN r.recovered_at IS NULL THEN 'open' ELSE 'recovered' END AS status
            FROM opened o LEFT JOIN rec r
              USING (kind, exchange, symbol, session, first_missing, last_missing)
        )
        SELECT * FROM joined WHERE (? = 'all' OR status = ?)
        ORDER BY session, symbol, kind, first_missing
        LIMIT ?
    """
    out = reader.runner.table(
        "gaps", sql, params, timeout_s=reader.limits.timeout_s, tables=tables, files=len(scan.files)
    )
    if pending is not None and status in ("pending", "all") and pending.height:
        out = _with_pending(out, pending, symbols, sessions, kind)
    return Result(reader.limits.check_rows(out, "gaps"), {GAPS: scan.snapshot_id})


def _with_pending(
    out: pa.Table, pending: pl.DataFrame, symbols: tuple[str, ...], sessions: SessionRange, kind: str | None
) -> pa.Table:
    keep = pl.lit(True)
    if symbols:
        keep &= pl.col("symbol").is_in(list(symbols))
    if kind is not None:
        keep &= pl.col("kind") == kind
    if sessions.first is not None:
        keep &= pl.col("session") >= sessions.first
    if sessions.last is not None:
        keep &= pl.col("session") <= sessions.last
    rows = pending.filter(keep).select(out.schema.names).to_arrow().cast(out.schema)
    merged = pa.concat_tables([out, rows])
    order = [
        ("session", "ascending"),
        ("symbol", "ascending"),
        ("kind", "ascending"),
        ("first_missing", "ascending"),
    ]
    return merged.sort_by(order)


def gap_counts(reader: LakeReader, pending: pl.DataFrame | None, *, limit: int = 20) -> list[dict[str, Any]]:
    """Gaps opened and recovered per symbol over the whole event log, plus the pending holes
    (``k2.state.pending``) of each: the dashboard's data-quality panel. The ``limit`` symbols with
    the most gaps, most first.

    Raises:
        QueryTimeoutError: see ``k2.query.errors``.
    """
    scan = reader.scan(GAPS, TimeTravel(), Prune())
    params: list[Any] = []
    tables: dict[str, pa.Table] = {}
    source = scan.source(params, tables, "g")
    sql = f"""
        WITH ev AS (
            SELECT DISTINCT event, kind, exchange, symbol, session, first_missing, last_missing FROM {source}
        )
        SELECT symbol, count(*) FILTER (WHERE event = 'opened') AS opened,
               count(*) FILTER (WHERE event = 'recovered') AS recovered
        FROM ev GROUP BY symbol
    """
    found = reader.runner.table(
        "gap_counts", sql, params, timeout_s=reader.limits.timeout_s, tables=tables, files=len(scan.files)
    ).to_pylist()
    counts = {r["symbol"]: {"symbol": r["symbol"], "opened": r["opened"], "recovered": r["recovered"],
                            "pending": 0} for r in found}  # fmt: skip
    if pending is not None and pending.height:
        for symbol, holes in pending.group_by("symbol").len().iter_rows():
            counts.setdefault(symbol, {"symbol": symbol, "opened": 0, "recovered": 0, "pending": 0})
            counts[symbol]["pending"] = int(holes)
    ranked = sorted(counts.values(), key=lambda c: (-(c["opened"] + c["pending"]), c["symbol"]))
    return ranked[:limit]
