"""What ``GET /v1/status`` answers: the ingest pipeline's state, data quality and the live tail.

The pipeline runs in its own process and writes its state to ``<data_dir>/status/ingest.json``
(``k2.resilience.status``, figures from ``k2.pipeline.vitals``); this module reads that file and
types it, adds the gap counts per symbol from the lake and this API process's own hybrid-tail
gauges. One document feeds every pipeline panel of the dashboard, so the page makes one request
per refresh instead of one per figure. A file written by an older K2 lacks some figures: they
read as zero or null rather than failing the route.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from k2.errors import K2Error
from k2.observability.logging import get_logger
from k2.observability.metrics import sample
from k2.resilience.status import read_status
from k2.types import TICK_KINDS

__all__ = ["PipelineStatus", "read_pipeline_status"]

log = get_logger("k2.api.status")

PerKind = dict[str, int]


class PartitionLag(BaseModel):
    topic: str
    partition: int
    lag: int = Field(description="High watermark minus the consumer's position.")


class Breaker(BaseModel):
    name: str = Field(description="The dependency: iceberg, state or kafka.")
    state: str = Field(description="closed, half_open or open.")
    failures: int
    retry_after: float = Field(description="Seconds until an open breaker lets a trial call through.")
    opened_total: int


class Transition(BaseModel):
    at: str = Field(description="When (ISO 8601, UTC).")
    previous: str
    level: str
    cause: str
    detail: str


class DeadLetterNote(BaseModel):
    at: str
    reason: str
    source: str = Field(description="topic=… partition=… offset=… of the rejected message.")


class Ingest(BaseModel):
    """The ingest process as its status file last described it."""

    running: bool = Field(description="The file says running and its process is alive.")
    pid: int | None
    updated_at: str | None = Field(description="When the pipeline last wrote its status (ISO 8601).")
    age_s: float | None = Field(description="Seconds since then (the file is rewritten every second).")
    level: str = Field(description="Degradation level: NORMAL, SOFT, GRACEFUL, AGGRESSIVE, CIRCUIT_BREAK.")
    level_since_s: float
    transitions: list[Transition] = Field(description="The latest level changes, oldest first.")
    lag: int = Field(description="Messages not yet read, over the source partitions.")
    peak_lag: int
    lags: list[PartitionLag]
    messages_per_s: float = Field(description="Messages read per second (about the last 10 s).")
    written_per_s: float = Field(description="Rows written per second (about the last 10 s).")
    messages: int
    written: int
    commits: int
    commit_last_s: float | None = Field(description="Duration of the last Iceberg commit (all tables).")
    last_commit_at: str | None
    freshness_s: float | None = Field(description="Seconds since the last commit: how stale Iceberg is.")
    deferred: int
    spilled: int
    backfilled: int
    stalled: bool
    stall_cause: str
    breakers: list[Breaker]


class SymbolGaps(BaseModel):
    symbol: str
    opened: int = Field(description="Gaps recorded in the lake.")
    recovered: int = Field(description="Of those, filled by late ticks.")
    pending: int = Field(description="Holes the sequence state holds that are not recorded yet.")


class Quality(BaseModel):
    """Sequence checks and dead letters: the pipeline's counters and the lake's gap log."""

    gaps_recorded: PerKind = Field(description="Per tick kind, by the running pipeline.")
    gaps_recovered: PerKind
    gaps_open: PerKind
    holes_pending: PerKind
    duplicates: PerKind = Field(description="Ticks dropped as duplicate message ids, per kind.")
    dead_letters: int
    latest_dead_letters: list[DeadLetterNote]
    by_symbol: list[SymbolGaps] = Field(description="The 20 symbols with the most gaps in the lake.")
    lake_error: str | None = Field(description="Why by_symbol is empty, when the lake could not answer.")


class Live(BaseModel):
    """This API process's live tail (the hybrid view's cache)."""

    tail_rows: int
    tail_bytes: int


class PipelineStatus(BaseModel):
    """Everything the dashboard shows about the pipeline, in one answer."""

    generated_at: str
    ingest: Ingest | None = Field(description="Null until a pipeline wrote its status under this data_dir.")
    quality: Quality
    live: Live


def _iso_age(value: str | None, now: float) -> float | None:
    if not value:
        return None
    try:
        return round(max(0.0, now - datetime.fromisoformat(value).timestamp()), 3)
    except ValueError:
        return None


def _ingest(doc: dict[str, Any], now: float) -> Ingest:
    deg = doc.get("degradation", {})
    signals = doc.get("signals", {})
    rate = doc.get("rate", {})
    commit = doc.get("commit", {})
    stats = doc.get("stats", {})
    return Ingest(
        running=bool(doc.get("running")) and bool(doc.get("alive")),
        pid=doc.get("pid"),
        updated_at=doc.get("updated_at"),
        age_s=_iso_age(doc.get("updated_at"), now),
        level=deg.get("level", "NORMAL"),
        level_since_s=float(deg.get("since_s", 0.0)),
        transitions=[
            Transition(at=t["at"], previous=t["from"], level=t["to"], cause=t["cause"], detail=t["detail"])
            for t in doc.get("transitions", [])
        ],
        lag=int(signals.get("lag", 0)),
        peak_lag=int(signals.get("peak_lag", 0)),
        lags=[PartitionLag(**p) for p in signals.get("lags", [])],
        messages_per_s=float(rate.get("messages_per_s", 0.0)),
        written_per_s=float(rate.get("written_per_s", 0.0)),
        messages=int(stats.get("messages", 0)),
        written=int(stats.get("written", 0)),
        commits=int(commit.get("count", stats.get("commits", 0))),
        commit_last_s=commit.get("last_s"),
        last_commit_at=commit.get("last_at"),
        freshness_s=_iso_age(commit.get("last_at"), now),
        deferred=int(doc.get("deferred", 0)),
        spilled=int(doc.get("spilled", 0)),
        backfilled=int(doc.get("backfilled", 0)),
        stalled=bool(doc.get("stalled", False)),
        stall_cause=str(doc.get("stall_cause", "")),
        breakers=[Breaker(**b) for b in doc.get("breakers", [])],
    )


def _per_kind(found: dict[str, Any], key: str) -> PerKind:
    values = found.get(key, {})
    return {kind: int(values.get(kind, 0)) for kind in TICK_KINDS}


def _quality(doc: dict[str, Any] | None, gap_counts: Callable[[], list[dict[str, Any]]] | None) -> Quality:
    found = (doc or {}).get("quality", {})
    lake_error = None
    try:
        by_symbol = [SymbolGaps(**row) for row in gap_counts()] if gap_counts is not None else []
    except K2Error as exc:  # the catalog is down: the pipeline's own figures still help
        by_symbol, lake_error = [], f"{type(exc).__name__}: {str(exc)[:200]}"
        log.warning("gap counts unavailable for /v1/status", error=lake_error)
    return Quality(
        gaps_recorded=_per_kind(found, "gaps_recorded"),
        gaps_recovered=_per_kind(found, "gaps_recovered"),
        gaps_open=_per_kind(found, "gaps_open"),
        holes_pending=_per_kind(found, "holes_pending"),
        duplicates=_per_kind(found, "duplicates"),
        dead_letters=int(found.get("dead_letters", (doc or {}).get("stats", {}).get("dead_letters", 0))),
        latest_dead_letters=[DeadLetterNote(**d) for d in found.get("latest_dead_letters", [])],
        by_symbol=by_symbol,
        lake_error=lake_error,
    )


def read_pipeline_status(
    data_dir: Path, gap_counts: Callable[[], list[dict[str, Any]]] | None = None
) -> PipelineStatus:
    """The status document for the pipeline writing under ``data_dir``; ``gap_counts`` asks the lake
    (without it, ``quality.by_symbol`` is empty: the metrics exporter reads the file alone)."""
    now = time.time()
    doc = read_status(data_dir)
    return PipelineStatus(
        generated_at=datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
        ingest=None if doc is None else _ingest(doc, now),
        quality=_quality(doc, gap_counts),
        live=Live(
            tail_rows=int(sample("k2_hybrid_tail_rows")), tail_bytes=int(sample("k2_hybrid_tail_bytes"))
        ),
    )
