"""The calls every client offers, written once: a client supplies how a call is fetched.

The sync client returns frames and iterators; the async one returns awaitables and async
iterators from the same methods, because each method only builds its :class:`~k2.client.calls.Call`
and hands it to the client's ``_table`` (one frame, every page followed), ``_iter`` (a frame per
page), ``_lines`` (NDJSON replay) or ``_events`` (SSE) implementation.
"""

from __future__ import annotations

from typing import Any

from k2.client import calls
from k2.client.calls import Symbols, Time
from k2.client.frames import Output

__all__ = ["PAGE_ROWS", "Routes"]

#: Rows per page the client asks for: a day of one liquid symbol in one or two round trips.
PAGE_ROWS = 50_000


class Routes:
    """Mirrors the REST routes; ``output`` picks polars (default), pandas or arrow per call."""

    output: Output

    def _table(self, call: calls.Call, output: Output | None) -> Any:
        raise NotImplementedError

    def _iter(self, call: calls.Call, output: Output | None) -> Any:
        raise NotImplementedError

    def _lines(self, call: calls.Call, output: Output | None, batch_rows: int, rows: bool) -> Any:
        raise NotImplementedError

    def _events(self, call: calls.Call) -> Any:
        raise NotImplementedError

    # -- history (time travel: snapshot_id= or as_of=) ------------------------------------------
    def trades(self, symbols: Symbols, start: Time | None = None, end: Time | None = None, *,
               order: str = "asc", page_rows: int = PAGE_ROWS, snapshot_id: int | None = None,
               as_of: Time | None = None, output: Output | None = None) -> Any:  # fmt: skip
        """Trades of the symbols in [start, end), every page followed, as one frame."""
        return self._table(calls.trades(symbols, start, end, order, page_rows, snapshot_id, as_of), output)

    def iter_trades(self, symbols: Symbols, start: Time | None = None, end: Time | None = None, *,
                    order: str = "asc", page_rows: int = PAGE_ROWS, snapshot_id: int | None = None,
                    as_of: Time | None = None, output: Output | None = None) -> Any:  # fmt: skip
        """Trades one page (frame) at a time, following the cursor: every page reads one snapshot."""
        return self._iter(calls.trades(symbols, start, end, order, page_rows, snapshot_id, as_of), output)

    def quotes(self, symbols: Symbols, start: Time | None = None, end: Time | None = None, *,
               order: str = "asc", page_rows: int = PAGE_ROWS, snapshot_id: int | None = None,
               as_of: Time | None = None, output: Output | None = None) -> Any:  # fmt: skip
        """Top-of-book quotes in [start, end), every page followed, as one frame."""
        return self._table(calls.quotes(symbols, start, end, order, page_rows, snapshot_id, as_of), output)

    def iter_quotes(self, symbols: Symbols, start: Time | None = None, end: Time | None = None, *,
                    order: str = "asc", page_rows: int = PAGE_ROWS, snapshot_id: int | None = None,
                    as_of: Time | None = None, output: Output | None = None) -> Any:  # fmt: skip
        """Quotes one page (frame) at a time, following the cursor."""
        return self._iter(calls.quotes(symbols, start, end, order, page_rows, snapshot_id, as_of), output)

    def bars(self, symbols: Symbols, start: Time | None = None, end: Time | None = None, *,
             interval: str | None = None, tz: str | None = None, snapshot_id: int | None = None,
             as_of: Time | None = None, output: Output | None = None) -> Any:  # fmt: skip
        """OHLCV bars with VWAP (interval e.g. "1m", "5m", "1h")."""
        return self._table(calls.bars(symbols, start, end, interval, tz, snapshot_id, as_of), output)

    def trades_with_quotes(self, symbols: Symbols, start: Time | None = None, end: Time | None = None, *,
                           tolerance: str | None = None, snapshot_id: int | None = None,
                           as_of: Time | None = None, output: Output | None = None) -> Any:  # fmt: skip
        """Each trade with the quote in force when it printed (an as-of join)."""
        call = calls.trades_with_quotes(symbols, start, end, tolerance, snapshot_id, as_of)
        return self._table(call, output)

    def latest(self, symbols: Symbols, *, snapshot_id: int | None = None, as_of: Time | None = None,
               output: Output | None = None) -> Any:  # fmt: skip
        """The last trade and quote per symbol."""
        return self._table(calls.latest(symbols, snapshot_id, as_of), output)

    def snapshots(
        self, table: str = "trades", *, limit: int | None = None, output: Output | None = None
    ) -> Any:
        """A table's snapshots, newest first, with the Kafka offsets each covers."""
        return self._table(calls.snapshots(table, limit), output)

    def symbols(self, symbols: Symbols | None = None, start: Time | None = None, end: Time | None = None, *,
                snapshot_id: int | None = None, as_of: Time | None = None,
                output: Output | None = None) -> Any:  # fmt: skip
        """Per symbol and session: counts, first and last time, gaps."""
        return self._table(calls.symbol_stats(symbols, start, end, snapshot_id, as_of), output)

    def gaps(self, symbols: Symbols | None = None, start: Time | None = None, end: Time | None = None, *,
             kind: str | None = None, status: str | None = None, snapshot_id: int | None = None,
             as_of: Time | None = None, output: Output | None = None) -> Any:  # fmt: skip
        """Sequence gaps recorded by the pipeline (status: open, recovered, pending or all)."""
        return self._table(calls.gaps(symbols, start, end, kind, status, snapshot_id, as_of), output)

    # -- live: Iceberg at a snapshot plus the Kafka tail after it ------------------------------
    def recent(self, symbol: str, *, kind: str = "trades", minutes: float | None = None,
               until: Time | None = None, consistency: str | None = None,
               output: Output | None = None) -> Any:  # fmt: skip
        """The last minutes of one symbol, uncommitted ticks included (kind: trades, quotes, bars)."""
        return self._table(calls.recent(kind, symbol, minutes, until, consistency), output)

    # -- streams ---------------------------------------------------------------------------------
    def replay(self, start: Time, end: Time, symbols: Symbols | None = None, *,
               kinds: Symbols = ("trades", "quotes"), speed: float | None = None,
               snapshot_id: int | None = None, as_of: Time | None = None, batch_rows: int = 10_000,
               rows: bool = False, output: Output | None = None) -> Any:  # fmt: skip
        """A time range in exchange-time order: frames of up to ``batch_rows`` (or dicts, ``rows=True``)."""
        call = calls.replay(start, end, symbols, kinds, speed, snapshot_id, as_of)
        return self._lines(call, output, batch_rows, rows)

    def stream(self, symbols: Symbols, *, kinds: Symbols = ("trades", "quotes"), bars: bool = True,
               duration: float | None = None) -> Any:  # fmt: skip
        """Live events as they arrive: ``StreamEvent(kind, data)`` (status, trade, quote, bar)."""
        return self._events(calls.stream(symbols, kinds, bars, duration))
