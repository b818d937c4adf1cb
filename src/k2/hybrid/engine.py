"""``HybridEngine``: Iceberg at snapshot S plus Kafka from S's offsets, merged exactly.

The boundary (DESIGN.md, invariant 2): the pipeline commits rows and the Kafka offsets they cover
in one Iceberg snapshot. Take snapshot S and *its own* offsets (one snapshot object, so the pair
is atomic): every message below S's offset of a partition is reflected in S, none at or above it
is. Reading S through the query engine (time travel to S's id, so a commit landing meanwhile
changes nothing) and Kafka from exactly those offsets to the high watermark gives the stream with
no gap and no overlap, whatever the commit lag, during a commit (S is the state before or after
it, never half of it), across a pipeline restart (it resumes from the same offsets) and across a
compaction (it rewrites files and carries the offsets forward).

The engine reads only the partitions that hold the requested symbols (``routing``), keeps their
decoded tails in a bounded incremental cache (``cache``), applies the pipeline's verdicts
(``decoder``, ``merge``) and returns a ``HybridResult`` that says where the boundary lay.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import polars as pl
from pyiceberg.table.snapshots import Snapshot

from k2.config import Settings
from k2.config.hybrid import Consistency, HybridSettings
from k2.hybrid import bars as bars_mod
from k2.hybrid.cache import COLD_SETUPS, NEVER_COMMITTED, TailCache, TailSource
from k2.hybrid.decoder import TailDecoder, known_symbols, tail_schema
from k2.hybrid.errors import RoutingError
from k2.hybrid.merge import Merged, merge, select_tail
from k2.hybrid.result import HybridResult
from k2.hybrid.routing import PartitionRouter
from k2.hybrid.view import Anchor, View, WindowOf, span_us
from k2.lake.offsets import snapshot_offsets
from k2.lake.tables import load_table
from k2.observability.logging import get_logger
from k2.observability.metrics import REGISTRY, Histogram
from k2.query.engine import QueryEngine
from k2.query.errors import CapExceededError, SnapshotNotFoundError
from k2.query.params import TimeRange, TimeTravel, epoch_us
from k2.query.sql import from_us
from k2.resilience.spill import spill_topic
from k2.types import REFERENCE_TABLE, TICK_KINDS, StreamKind

__all__ = ["HybridEngine"]

log = get_logger(__name__)

HYBRID_SECONDS = Histogram(
    "k2_hybrid_query_seconds",
    "Hybrid query latency (Iceberg + Kafka tail)",
    ["query"],
    registry=REGISTRY,
    buckets=(0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


class HybridEngine:
    """History from Iceberg and the live tail from Kafka, as one exact stream (thread-safe).

    Args:
        settings: the K2 settings (Kafka, lake namespace, pipeline's clock skew).
        engine: the query engine that reads Iceberg (shared with the API's other routes).
        hybrid: this engine's section; default ``settings.hybrid``.
        source: the Kafka side (tests pass a fake); default: ``KafkaTail`` built on first use.
    """

    def __init__(
        self,
        settings: Settings,
        engine: QueryEngine,
        *,
        hybrid: HybridSettings | None = None,
        source: TailSource | None = None,
    ) -> None:
        self.settings = settings
        self.hybrid: HybridSettings = hybrid or settings.hybrid
        self.engine = engine
        # a kind's ticks live in its topic and, while the pipeline sheds load, in its spill topic
        self.topics = {settings.kafka.topic(k): k for k in TICK_KINDS}
        self.spills = {k: spill_topic(settings.kafka, k) for k in TICK_KINDS}
        self.topics.update({t: k for k, t in self.spills.items()})
        self.router = PartitionRouter(settings.kafka.client.get("partitioner"), self.hybrid.routing)
        self._source = source
        self._cache: TailCache | None = None
        self._lock = threading.Lock()
        self._reference: tuple[float, set[str] | None] = (float("-inf"), None)
        self._latest: dict[tuple[str, tuple[str, ...], int], int | None] = {}
        self._stop = threading.Event()
        self._pump: threading.Thread | None = None

    # -- wiring -----------------------------------------------------------------------------------
    @property
    def cache(self) -> TailCache:
        """The tail cache, built (with its consumers and prefetch thread) on first use."""
        with self._lock:
            if self._cache is None:
                if self._source is None:
                    from k2.hybrid.consumer import KafkaTail

                    self._source = KafkaTail(self.settings.kafka, self.hybrid)
                decoder = TailDecoder(self.settings.pipeline.max_clock_skew_s, self._known_symbols)
                self._cache = TailCache(self.hybrid, self._source, decoder, self.topics)
                COLD_SETUPS.labels("clients").inc()
                if self.hybrid.prefetch_interval_s > 0:
                    self._pump = threading.Thread(
                        target=self._prefetch, name="k2-hybrid-prefetch", daemon=True
                    )
                    self._pump.start()
            return self._cache

    def _prefetch(self) -> None:
        while not self._stop.wait(self.hybrid.prefetch_interval_s):
            cache = self._cache
            if cache is None:
                continue
            try:
                cache.pump()
            except Exception as exc:  # the next query reads (and reports) for itself
                log.warning("tail prefetch failed", error=str(exc))

    def _known_symbols(self) -> set[str] | None:
        loaded_at, symbols = self._reference
        now = time.monotonic()
        if now - loaded_at >= self.hybrid.reference_refresh_s:
            try:
                table = load_table(self.engine.catalog, self.settings.lake.namespace, REFERENCE_TABLE)
                symbols = known_symbols(table)
            except Exception as exc:  # the pipeline, too, accepts every symbol without reference data
                log.debug("reference symbols unavailable", error=str(exc))
                symbols = None
            self._reference = (now, symbols)
        return symbols

    def close(self) -> None:
        """Stop the prefetch thread and close the Kafka consumers."""
        self._stop.set()
        if self._pump is not None:
            self._pump.join(timeout=5)
        with self._lock:
            if self._cache is not None:
                self._cache.close()
                self._cache = None
            elif self._source is not None:
                self._source.close()

    def warm(self, max_rows: int | None = None) -> dict[str, int]:
        """What the first live query would set up, done now (the API's warm-up calls it at start).

        Builds the Kafka clients and the tail cache, then reads into the cache the tails of the
        partitions of both kinds (from their current snapshot's offsets, spill partitions too),
        shortest tails first, while they fit ``max_rows`` (default: a quarter of
        ``hybrid.max_tail_messages``) and half of ``hybrid.max_partitions``: a partition whose
        tail would not fit is left to its first query, as before. Cached partitions follow the
        cache's rules (trimmed as snapshots advance, dropped after ``idle_partition_s``).

        Returns: partitions read, their tail rows, the topics' partition count.

        Raises:
            TailReadError: Kafka did not answer.
            TableMissingError: a table does not exist.
        """
        budget = self.hybrid.max_tail_messages // 4 if max_rows is None else max_rows
        cache = self.cache
        source = cache.source
        starts: dict[tuple[str, int], int] = {}
        for kind in TICK_KINDS:
            table = self.engine.current_table(kind)
            offsets = snapshot_offsets(table, table.current_snapshot())
            for topic in (self.settings.kafka.topic(kind), self.spills[kind]):
                for p in range(source.partition_count(topic)):
                    starts[(topic, p)] = offsets.get((topic, p), NEVER_COMMITTED)
        highs = source.high_watermarks(list(starts))
        never = [tp for tp, start in starts.items() if start == NEVER_COMMITTED]
        lows = source.low_watermarks(never) if never else {}
        lengths = {tp: max(highs[tp] - (lows.get(tp, 0) if start == NEVER_COMMITTED else start), 0)
                   for tp, start in starts.items()}  # fmt: skip
        chosen: dict[tuple[str, int], int] = {}
        total = 0
        for tp in sorted(starts, key=lambda t: (lengths[t], t)):
            if len(chosen) >= max(self.hybrid.max_partitions // 2, 1) or total + lengths[tp] > budget:
                break
            chosen[tp] = starts[tp]
            total += lengths[tp]
        read = cache.read(chosen, wait=True) if chosen else None
        rows = sum(f.height for part in read.parts.values() for f in part.frames) if read else 0
        self._known_symbols()  # the reference table, which validation of the tail reads
        return {"partitions": len(chosen), "tail_rows": rows, "topic_partitions": len(starts)}

    # -- the boundary -------------------------------------------------------------------------------
    def view(
        self, kind: StreamKind, symbols: tuple[str, ...], *, consistency: Consistency | None = None
    ) -> View:
        """Snapshot S of ``kind`` and the tail from S's offsets, on the symbols' partitions.

        ``consistency`` (default ``hybrid.consistency``) says how far the tail is read: see
        ``k2.config.hybrid.Consistency``.

        S is the query engine's current table state (reloaded every ``refresh_interval_s``): any
        snapshot gives an exact answer, a newer one only a shorter tail.

        Raises:
            TailReadError: Kafka did not answer.
            TableMissingError: the table does not exist.
        """
        table = self.engine.current_table(kind)
        snap = table.current_snapshot()
        offsets = snapshot_offsets(table, snap)  # the same snapshot object: S and its offsets, atomic
        topic, spill = self.settings.kafka.topic(kind), self.spills[kind]
        cache = self.cache
        parts = self.router.partitions(symbols, cache.source.partition_count(topic))
        starts = {(topic, p): offsets.get((topic, p), NEVER_COMMITTED) for p in parts}
        # Deferred (shed) ticks wait in the spill partition of their source partition until the
        # back-fill commits them: that part of the stream is read from S's spill offsets too.
        spilled = cache.source.partition_count(spill)
        starts.update({(spill, p): offsets.get((spill, p), NEVER_COMMITTED) for p in parts if p < spilled})
        tail = cache.read(starts, wait=(consistency or self.hybrid.consistency) == "watermark")
        return View(kind, table, snap, offsets, tail, parts)

    def history(
        self, kind: StreamKind, symbols: tuple[str, ...], window: TimeRange, snapshot: Snapshot | None
    ) -> pl.DataFrame | None:
        """Rows of ``symbols`` in ``window`` as Iceberg holds them at ``snapshot`` (None: no snapshot).

        Raises:
            CapExceededError: more rows than the engine's ``max_rows``.
            SnapshotNotFoundError: the snapshot was expired meanwhile.
        """
        if snapshot is None:
            return None
        limit = self.engine.limits.max_rows
        result = self.engine.ticks(
            kind, symbols, window, limit=limit, travel=TimeTravel(snapshot_id=snapshot.snapshot_id)
        )
        if result.next_cursor is not None:
            raise CapExceededError(
                f"more than {limit} {kind} in the window (api.max_rows); ask for fewer minutes or symbols",
                cap="api.max_rows",
                limit=limit,
            )
        frame = pl.from_arrow(result.table)
        assert isinstance(frame, pl.DataFrame)
        return frame

    # -- queries ----------------------------------------------------------------------------------------
    def ticks(
        self,
        kind: StreamKind,
        symbols: tuple[str, ...],
        window: TimeRange,
        *,
        consistency: Consistency | None = None,
    ) -> HybridResult:
        """Every tick of ``symbols`` in ``window``: Iceberg at S, then the tail, exchange-time order.

        Raises:
            CapExceededError, TailReadError, TableMissingError: see ``history`` and ``view``.
        """
        return self._query(kind, symbols, lambda _view, _rows: window, "ticks", consistency)

    def recent(
        self,
        kind: StreamKind,
        symbols: tuple[str, ...],
        minutes: float,
        *,
        until: datetime | None = None,
        anchor: Anchor = "latest",
        consistency: Consistency | None = None,
    ) -> HybridResult:
        """The last ``minutes`` of ticks, ending at ``until``, the newest tick (``latest``) or now.

        Raises:
            InvalidParameterError: minutes out of range.
            CapExceededError, TailReadError, TableMissingError: see ``ticks``.
        """
        span = span_us(minutes, self.hybrid.max_minutes)
        window = self._window_fn(kind, symbols, span, until, anchor)
        return self._query(kind, symbols, window, "recent", consistency)

    def live_bars(
        self,
        symbols: tuple[str, ...],
        interval_us: int,
        minutes: float,
        *,
        until: datetime | None = None,
        anchor: Anchor = "latest",
        consistency: Consistency | None = None,
    ) -> HybridResult:
        """OHLCV bars over the last ``minutes``; the newest bar includes ticks not yet in Iceberg.

        Every bar overlapping the window is returned whole (all trades of its bucket).

        Raises:
            InvalidParameterError: minutes out of range.
            CapExceededError, TailReadError, TableMissingError: see ``ticks``.
        """
        span = span_us(minutes, self.hybrid.max_minutes)
        target = self._window_fn("trades", symbols, span, until, anchor)
        chosen: list[TimeRange] = []

        def widened(view: View, rows: Callable[[], pl.DataFrame | None]) -> TimeRange:
            window = target(view, rows)
            chosen.append(window)
            return TimeRange(from_us(window.start_us - interval_us), from_us(window.end_us + interval_us))

        result = self._query("trades", symbols, widened, "live_bars", consistency)
        window = chosen[-1]
        bars = bars_mod.bars_from_trades(result.rows, interval_us)
        bars = bars.filter(
            (pl.col("end") > pl.lit(window.start, dtype=pl.Datetime("us", "UTC")))
            & (pl.col("start") < pl.lit(window.end, dtype=pl.Datetime("us", "UTC")))
        )
        result.kind, result.rows, result.window = "bars", bars, window
        result.extra["interval_us"] = interval_us
        return result

    # -- internals ----------------------------------------------------------------------------------------
    def _window_fn(
        self, kind: StreamKind, symbols: tuple[str, ...], span_us: int, until: datetime | None, anchor: Anchor
    ) -> WindowOf:
        def window(view: View, tail_rows: Callable[[], pl.DataFrame | None]) -> TimeRange:
            if until is not None:
                end = epoch_us(until)
            elif anchor == "now":
                end = epoch_us(datetime.now(UTC)) + 1
            else:
                end = self._latest_us(kind, symbols, view, tail_rows()) + 1
            return TimeRange(from_us(end - span_us), from_us(end))

        return window

    def _latest_us(
        self, kind: StreamKind, symbols: tuple[str, ...], view: View, tail: pl.DataFrame | None
    ) -> int:
        """The newest exchange time of the symbols, in the tail or committed; now when there is none."""
        newest: list[int] = []
        if tail is not None:
            newest.append(int(tail.get_column("exchange_ts").dt.epoch("us").max()))  # type: ignore[arg-type]
        committed = self.committed_latest_us(kind, symbols, view)
        if committed is not None:
            newest.append(committed)
        return max(newest) if newest else epoch_us(datetime.now(UTC))

    def committed_latest_us(self, kind: StreamKind, symbols: tuple[str, ...], view: View) -> int | None:
        """An upper bound of the symbols' exchange times in Iceberg at the view's snapshot.

        The query engine's newest tick of the symbols in that table (not the other one), read at
        its current table state (the same as the view's snapshot, or newer: still an upper bound),
        memoised per snapshot.
        """
        if view.snapshot is None:
            return None
        key = (kind, symbols, view.snapshot.snapshot_id)
        if key in self._latest:
            return self._latest.get(key)
        newest = self.engine.newest_us(kind, symbols)
        if len(self._latest) > 1024:  # one entry per snapshot and symbol set: forget old snapshots
            self._latest = {}
        self._latest[key] = newest
        return newest

    def merge_view(self, view: View, symbols: tuple[str, ...], window: TimeRange) -> tuple[Merged, int]:
        """The view's answer for ``symbols`` and ``window``, and how many rows came from Iceberg.

        Raises:
            RoutingError: history rows came from a partition the router did not read (the router
                now reads every partition; take a new view).
            CapExceededError, SnapshotNotFoundError: see ``history``.
        """
        tail = select_tail(view.frames(), symbols, window.start_us, window.end_us)
        history = self.history(view.kind, symbols, window, view.snapshot)
        if history is not None and history.height and self.router.exact:
            found = set(history.get_column("kafka_partition").unique().to_list())
            if not found <= set(view.partitions):
                error = RoutingError(symbols, set(view.partitions), found)
                self.router.distrust(str(error))
                raise error
        merged = merge(history, tail, tail_schema(view.kind))
        limit = self.engine.limits.max_rows
        if merged.rows.height > limit:
            raise CapExceededError(
                f"more than {limit} rows in the window (api.max_rows); ask for fewer minutes or symbols",
                cap="api.max_rows",
                limit=limit,
                requested=merged.rows.height,
            )
        return merged, 0 if history is None else history.height

    def _query(
        self,
        kind: StreamKind,
        symbols: tuple[str, ...],
        window_of: WindowOf,
        label: str,
        consistency: Consistency | None,
    ) -> HybridResult:
        started = time.perf_counter()
        for attempt in range(3):
            view = self.view(kind, symbols, consistency=consistency)
            window = window_of(view, functools.partial(select_tail, view.frames(), symbols, None, None))
            try:
                merged, history_rows = self.merge_view(view, symbols, window)
            except (SnapshotNotFoundError, RoutingError):
                if attempt == 2:
                    raise
                continue  # the snapshot expired meanwhile, or routing was wrong: a new view
            HYBRID_SECONDS.labels(label).observe(time.perf_counter() - started)
            return HybridResult(
                kind,
                merged.rows,
                window,
                view.boundary,
                view.tail,
                history_rows=history_rows,
                tail_rows=merged.tail_rows,
                duplicates=merged.duplicates,
                extra={"consistency": consistency or self.hybrid.consistency},
            )
        raise AssertionError("unreachable: the last attempt returns or raises")
