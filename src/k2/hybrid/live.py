"""Live subscriptions: new ticks of chosen symbols as they reach Kafka, and updating bars.

A subscription remembers, per tail partition, the next offset it has not emitted. Each ``poll``
takes a fresh view (snapshot S and the tail after it, from the shared cache) and emits the rows
at or beyond those positions, after the pipeline's duplicate rule (``k2.hybrid.merge``): a row is
dropped when its key or message id

* was emitted by this subscription before (bounded memory of recent ids: a tick deferred to the
  spill topic comes back there as a copy),
* occurs earlier in the tail (before the subscription started, after S), or
* is in Iceberg at S. Only rows not newer than the newest committed tick of their symbols can
  be there (a re-send keeps its exchange time), so live ticks normally cost no Iceberg read.

With ``bars``, every trade batch also updates the bars of the buckets it touches. A bucket seen
for the first time is computed whole from the same view (history at S plus tail); later trades
are folded into it exactly (``k2.hybrid.bars.combine``).
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import polars as pl

from k2.hybrid import bars as bars_mod
from k2.hybrid.engine import HybridEngine
from k2.hybrid.merge import ORDER, anti_duplicates, select_tail
from k2.hybrid.view import View
from k2.query.params import TimeRange
from k2.query.sql import from_us
from k2.types import StreamKind
from k2.types import TopicPartition as TP

__all__ = ["EventKind", "LiveEvent", "LiveSubscription", "Wait"]

EventKind = Literal["trade", "quote", "bar", "status"]
_EVENT: dict[str, EventKind] = {"trades": "trade", "quotes": "quote"}
#: Message ids remembered per kind (the most recent), to drop re-emitted copies.
_REMEMBER = 200_000
#: Bars kept per symbol (the newest buckets); an older bucket touched again is recomputed whole.
_BARS_KEPT = 4


@dataclass(frozen=True)
class LiveEvent:
    """What a subscription emits: rows of one kind (ticks or bars), or a status dictionary."""

    kind: EventKind
    rows: pl.DataFrame | None = None
    status: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Wait:
    """Between two polls of ``LiveSubscription.steps``: wait ``seconds``; ``keep_alive`` after long quiet."""

    seconds: float
    keep_alive: bool = False


class LiveSubscription:
    """New ticks (and 1-minute bars) of ``symbols`` from the moment ``start`` is called.

    Args:
        engine: the hybrid engine (its tail cache is shared with every query).
        kinds: "trades", "quotes" or both.
        symbols: the symbols to follow.
        bars: also emit updated bars of the buckets new trades touch.
        bar_interval_us: the bar length (default one minute).
    """

    def __init__(
        self,
        engine: HybridEngine,
        kinds: tuple[StreamKind, ...],
        symbols: tuple[str, ...],
        *,
        bars: bool = True,
        bar_interval_us: int = 60_000_000,
    ) -> None:
        self.engine = engine
        self.kinds = kinds
        self.symbols = symbols
        self.bars = bars and "trades" in kinds
        self.interval_us = bar_interval_us
        self._pos: dict[TP, int] = {}
        self._emitted: dict[str, pl.Series] = {}
        self._book = pl.DataFrame(schema=bars_mod.PARTIAL_SCHEMA)
        self._truncated: dict[str, str | None] = {}
        self.emitted = 0

    def start(self) -> LiveEvent:
        """Position at the current end of the tail; returns a status event describing it."""
        parts = []
        for kind in self.kinds:
            view = self.engine.view(kind, self.symbols)  # positioned at the broker's watermark
            for tp, part in view.tail.parts.items():
                self._pos[tp] = part.end
            parts.append(self._status(view))
        return LiveEvent(
            "status", status={"subscribed": list(self.symbols), "kinds": list(self.kinds), "views": parts}
        )

    def poll(self) -> list[LiveEvent]:
        """Events for what arrived since the last poll (ticks first, then bars, then status)."""
        events: list[LiveEvent] = []
        for kind in self.kinds:
            events += self._poll_kind(kind)
        return events

    def steps(
        self,
        *,
        interval_s: float | None = None,
        idle_s: float | None = None,
        idle_reason: str = "idle",
        heartbeat_s: float | None = None,
    ) -> Generator[LiveEvent | Wait, None, None]:
        """The one streaming loop: ``start``, then ``poll`` with a ``Wait`` between polls, for ever.

        The caller does the waiting (``stream`` sleeps; the API's SSE route awaits, so that no
        thread is held) and decides when to stop. Ends, after a ``status`` event
        ``{"closed": idle_reason}``, once ``idle_s`` passed without an event. A ``Wait`` is marked
        ``keep_alive`` once every ``heartbeat_s`` (default hybrid.heartbeat_s) of quiet.
        """
        interval = self.engine.hybrid.stream_interval_s if interval_s is None else interval_s
        heartbeat = self.engine.hybrid.heartbeat_s if heartbeat_s is None else heartbeat_s
        yield self.start()
        quiet_since = last_event = time.monotonic()
        while True:
            events = self.poll()
            yield from events
            now = time.monotonic()
            keep_alive = False
            if events:
                quiet_since = last_event = now
            elif idle_s is not None and now - last_event >= idle_s:
                yield LiveEvent("status", status={"closed": idle_reason})
                return
            elif now - quiet_since >= heartbeat:
                quiet_since = now
                keep_alive = True
            yield Wait(interval, keep_alive)

    def stream(
        self, *, duration_s: float | None = None, interval_s: float | None = None
    ) -> Iterator[LiveEvent]:
        """``steps`` with blocking sleeps, for ever (or for ``duration_s``)."""
        ends = None if duration_s is None else time.monotonic() + duration_s
        for step in self.steps(interval_s=interval_s):
            if isinstance(step, LiveEvent):
                yield step
                continue
            time.sleep(step.seconds)
            if ends is not None and time.monotonic() >= ends:
                return

    # -- one kind -------------------------------------------------------------------------------
    def _poll_kind(self, kind: StreamKind) -> list[LiveEvent]:
        # What the prefetch thread decoded: no broker round trip per poll and per subscriber. Without
        # a prefetch thread nothing would advance the cache, so each poll reads to the watermark.
        prefetching = self.engine.hybrid.prefetch_interval_s > 0
        view = self.engine.view(kind, self.symbols, consistency="cached" if prefetching else "watermark")
        earlier, new = [], []
        for tp, part in view.tail.parts.items():
            pos = self._pos.get(tp, part.start)
            rows = select_tail(part.frames, self.symbols, None, None)
            if rows is not None:
                earlier.append(rows.filter(pl.col("kafka_offset") < pos))
                new.append(rows.filter(pl.col("kafka_offset") >= pos))
            self._pos[tp] = max(pos, part.end)
        events = self._status_change(kind, view)
        fresh = self._fresh(kind, view, _concat(new), _concat(earlier))
        if fresh is None or fresh.is_empty():
            return events
        self.emitted += fresh.height
        events.insert(0, LiveEvent(_EVENT[kind], fresh.sort(list(ORDER), maintain_order=True)))
        if kind == "trades" and self.bars:
            events.insert(1, LiveEvent("bar", self._update_bars(view, fresh)))
        return events

    def _fresh(
        self, kind: StreamKind, view: View, new: pl.DataFrame | None, earlier: pl.DataFrame | None
    ) -> pl.DataFrame | None:
        if new is None or new.is_empty():
            return None
        others = [] if earlier is None or not earlier.height else [earlier.lazy()]
        seen = self._emitted.get(kind)
        rows = new.lazy()
        if seen is not None and seen.len():
            rows = rows.filter(~pl.col("message_id").is_in(seen.implode()))
        fresh = anti_duplicates(rows, *others).collect()
        committed = self.engine.committed_latest_us(kind, self.symbols, view)
        if committed is not None and fresh.height:
            micros = pl.col("exchange_ts").cast(pl.Int64)
            old = fresh.filter(micros <= committed)
            if old.height:
                lo = int(old.get_column("exchange_ts").cast(pl.Int64).min())  # type: ignore[arg-type]
                symbols = tuple(old.get_column("symbol").unique().sort().to_list())
                history = self.engine.history(
                    kind, symbols, TimeRange(from_us(lo), from_us(committed + 1)), view.snapshot
                )
                if history is not None and history.height:
                    fresh = anti_duplicates(fresh.lazy(), history.lazy()).collect()
        ids = fresh.get_column("message_id")
        self._emitted[kind] = (pl.concat([seen, ids]) if seen is not None else ids).tail(_REMEMBER)
        return fresh.with_columns(committed=pl.lit(False))

    # -- bars -----------------------------------------------------------------------------------
    def _update_bars(self, view: View, trades: pl.DataFrame) -> pl.DataFrame:
        touched = bars_mod.partials(trades, self.interval_us)
        keys = list(bars_mod.PARTIAL_KEYS)
        held = touched.join(self._book.select(keys), on=keys, how="semi")
        missing = touched.join(self._book.select(keys), on=keys, how="anti")
        parts = [self._book]
        if held.height:
            parts.append(held)
        if missing.height:
            parts.append(self._whole_buckets(view, missing))
        book = bars_mod.combine(pl.concat(parts))
        newest = pl.col("bucket_us").rank("ordinal", descending=True).over("exchange", "symbol")
        self._book = book.filter(newest <= _BARS_KEPT)
        return bars_mod.finish(book.join(touched.select(keys), on=keys, how="semi"))

    def _whole_buckets(self, view: View, missing: pl.DataFrame) -> pl.DataFrame:
        """Partials of buckets computed from everything the view knows (history at S + tail)."""
        lo = int(missing.get_column("start").dt.epoch("us").min())  # type: ignore[arg-type]
        hi = int(missing.get_column("end").dt.epoch("us").max())  # type: ignore[arg-type]
        symbols = tuple(missing.get_column("symbol").unique().sort().to_list())
        merged, _ = self.engine.merge_view(view, symbols, TimeRange(from_us(lo), from_us(hi)))
        whole = bars_mod.partials(merged.rows, self.interval_us)
        return whole.join(
            missing.select(list(bars_mod.PARTIAL_KEYS)), on=list(bars_mod.PARTIAL_KEYS), how="semi"
        )

    # -- status ---------------------------------------------------------------------------------
    def _status(self, view: View) -> dict[str, Any]:
        b = view.boundary
        return {
            "kind": view.kind,
            "snapshot_id": None if b.snapshot_id is None else str(b.snapshot_id),
            "positions": [
                {"topic": t, "partition": p, "offset": part.end}
                for (t, p), part in sorted(view.tail.parts.items())
            ],
            "truncated": view.tail.truncated,
            "truncated_reason": "; ".join(view.tail.reasons) or None,
        }

    def _status_change(self, kind: StreamKind, view: View) -> list[LiveEvent]:
        reason = "; ".join(view.tail.reasons) or None
        if self._truncated.get(kind) == reason:
            return []
        self._truncated[kind] = reason
        return [LiveEvent("status", status=self._status(view))]


def _concat(frames: list[pl.DataFrame]) -> pl.DataFrame | None:
    frames = [f for f in frames if f.height]
    if not frames:
        return None
    return frames[0] if len(frames) == 1 else pl.concat(frames)
