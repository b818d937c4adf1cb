"""Fakes for the hybrid engine: an in-memory Kafka (``FakeSource``) and a stream committed to a
real Iceberg lake the way the pipeline commits (rows plus the offsets they cover, in one snapshot).

The truth is kept on the producing side: every message appended, per partition, in order; which
of them are ticks (not garbage); and which ticks each commit wrote. Nothing here uses the hybrid
package's own decoding or deduplication, so a bug there cannot hide on both sides.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_NOT_AVAILABLE

from k2.config import Settings, load_settings
from k2.config.hybrid import HybridSettings
from k2.hybrid import HybridEngine
from k2.lake import ensure_tables, open_catalog
from k2.lake.stamp import without_stamp
from k2.lake.writer import NO_OFFSET, TableWriter
from k2.query.engine import QueryEngine
from k2.schemas import encode_batch, frame_schema, message_ids
from k2.types import TopicPartition as TP

T0 = datetime(2024, 3, 11, 0, 0, tzinfo=UTC)
SESSION = date(2024, 3, 11)


@dataclass
class FakeMessage:
    """The part of ``confluent_kafka.Message`` the tail cache reads."""

    _topic: str
    _partition: int
    _offset: int
    _value: bytes | None
    _timestamp_ms: int | None = None  # None: the message carries no timestamp

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value

    def error(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (
            (TIMESTAMP_NOT_AVAILABLE, 0)
            if self._timestamp_ms is None
            else (TIMESTAMP_CREATE_TIME, self._timestamp_ms)
        )


class FakeSource:
    """An in-memory Kafka with librdkafka's fetch behaviour: assigned partitions deliver in order."""

    def __init__(self, partitions: dict[str, int]) -> None:
        self.partitions = partitions
        self.logs: dict[TP, list[bytes | None]] = {}
        self.times: dict[TP, list[int | None]] = {}  # each message's timestamp (ms), None: none
        self.low: dict[TP, int] = {}
        self.positions: dict[TP, int] = {}
        self.paused: set[TP] = set()
        self.calls: dict[str, int] = {"high": 0, "low": 0, "cached": 0, "poll": 0, "position": 0}
        self.closed = False

    def append(self, topic: str, partition: int, value: bytes | None, timestamp_ms: int | None = None) -> int:
        log = self.logs.setdefault((topic, partition), [])
        log.append(value)
        self.times.setdefault((topic, partition), []).append(timestamp_ms)
        return len(log) - 1

    def partition_count(self, topic: str) -> int:
        return self.partitions.get(topic, 0)

    def high_watermarks(self, tps: list[TP]) -> dict[TP, int]:
        self.calls["high"] += 1
        return {tp: len(self.logs.get(tp, [])) for tp in tps}

    def low_watermarks(self, tps: list[TP]) -> dict[TP, int]:
        self.calls["low"] += 1
        return {tp: self.low.get(tp, 0) for tp in tps}

    def cached_high_watermarks(self, tps: list[TP]) -> dict[TP, int]:
        self.calls["cached"] += 1
        return {tp: len(self.logs.get(tp, [])) for tp in tps}

    def position(self, tp: TP, offset: int) -> None:
        self.calls["position"] += 1
        self.positions[tp] = max(offset, self.low.get(tp, 0))
        self.paused.discard(tp)

    def release(self, tps: list[TP]) -> None:
        for tp in tps:
            self.positions.pop(tp, None)
            self.paused.discard(tp)

    def pause(self, tp: TP) -> None:
        self.paused.add(tp)

    def poll(self, max_messages: int, timeout_s: float) -> list[FakeMessage]:
        self.calls["poll"] += 1
        out: list[FakeMessage] = []
        for tp, pos in sorted(self.positions.items()):
            if tp in self.paused:
                continue
            log = self.logs.get(tp, [])
            take = log[pos : pos + max_messages - len(out)]
            times = self.times.get(tp, [])[pos : pos + len(take)]
            out += [
                FakeMessage(tp[0], tp[1], pos + i, v, t)
                for i, (v, t) in enumerate(zip(take, times, strict=True))
            ]
            self.positions[tp] = pos + len(take)
        return out

    def close(self) -> None:
        self.closed = True


def ticks(
    kind: str, symbols: list[str], sequences: list[int], *, seconds: list[float] | None = None
) -> pl.DataFrame:
    """Canonical ticks: ``symbols[i]`` with ``sequences[i]`` at T0 + seconds[i] (default: i s)."""
    n = len(symbols)
    at = seconds if seconds is not None else [float(i) for i in range(n)]
    base = {
        "message_id": [""] * n,
        "exchange": ["SIM"] * n,
        "symbol": symbols,
        "session": [SESSION] * n,
        "sequence": sequences,
        "exchange_ts": [T0 + timedelta(seconds=s) for s in at],
        "ingest_ts": [T0 + timedelta(seconds=s) for s in at],
    }
    if kind == "trades":
        extra = {
            "price": [Decimal("10.5") + Decimal(q % 7) / 100 for q in sequences],
            "size": [Decimal(100 + q % 5) for q in sequences],
            "trade_id": [None] * n,
            "qualifiers": [None] * n,
            "venue": [None] * n,
        }
    else:
        extra = {
            "bid_price": [Decimal("10.40")] * n,
            "ask_price": [Decimal("10.60")] * n,
            "bid_size": [Decimal(100)] * n,
            "ask_size": [Decimal(200)] * n,
        }
    frame = pl.DataFrame({**base, **extra}, schema=frame_schema(kind))
    return frame.with_columns(message_id=message_ids(kind, frame))


class Stream:
    """Ticks produced to a ``FakeSource`` and committed to Iceberg like ``k2 ingest`` does."""

    def __init__(self, settings: Settings, source: FakeSource) -> None:
        self.settings = settings
        self.source = source
        self.count = settings.kafka.partitions
        self.catalog = open_catalog(settings)
        ensure_tables(self.catalog, settings.lake.namespace)
        self.rows: dict[str, list[pl.DataFrame]] = {"trades": [], "quotes": []}
        self.committed: dict[str, dict[TP, int]] = {"trades": {}, "quotes": {}}
        self.written: dict[str, set[str]] = {"trades": set(), "quotes": set()}
        self.writers = {
            k: TableWriter(self.catalog, f"{settings.lake.namespace}.{k}", sort_by=("symbol", "exchange_ts"))
            for k in ("trades", "quotes")
        }

    def topic(self, kind: str) -> str:
        return self.settings.kafka.topic(kind)

    def partition(self, symbol: str) -> int:
        return zlib.crc32(symbol.encode()) % self.count

    def produce(self, kind: str, frame: pl.DataFrame, *, topic: str | None = None) -> pl.DataFrame:
        """Append each row to its symbol's partition (of ``topic``); returns the rows with lineage."""
        topic = topic or self.topic(kind)
        values = encode_batch(kind, frame)
        parts, offsets = [], []
        for symbol, value in zip(frame["symbol"].to_list(), values, strict=True):
            p = self.partition(symbol)
            parts.append(p)
            offsets.append(self.source.append(topic, p, value))
        rows = frame.with_columns(
            kafka_partition=pl.Series(parts, dtype=pl.Int32),
            kafka_offset=pl.Series(offsets, dtype=pl.Int64),
            _topic=pl.lit(topic),
        )
        self.rows[kind].append(rows)
        return rows

    def garbage(self, kind: str, symbol: str) -> int:
        """An undecodable message on the symbol's partition (the pipeline dead-letters it)."""
        return self.source.append(self.topic(kind), self.partition(symbol), b"\x00not avro")

    def commit(self, kind: str, upto: dict[int, int] | None = None) -> int:
        """Write partitions' next messages up to ``upto`` (default: everything) as one snapshot."""
        topic = self.topic(kind)
        start = dict(self.committed[kind])
        end = {
            (topic, p): (upto or {}).get(p, len(log))
            for (t, p), log in self.source.logs.items()
            if t == topic and (upto is None or p in upto)
        }
        every = pl.concat(self.rows[kind]) if self.rows[kind] else None
        batch = []
        if every is not None:
            every = every.filter(pl.col("_topic") == topic)
            for (_, p), e in end.items():
                s = max(start.get((topic, p), NO_OFFSET), 0)
                batch.append(
                    every.filter(
                        (pl.col("kafka_partition") == p) & pl.col("kafka_offset").is_between(s, e - 1)
                    )
                )
        rows = pl.concat(batch).sort("kafka_partition", "kafka_offset") if batch else None
        if rows is not None:
            rows = rows.filter(
                pl.col("message_id").is_first_distinct()
                & ~pl.col("message_id").is_in(list(self.written[kind]))
            )
            self.written[kind].update(rows["message_id"].to_list())
        schema = without_stamp(self.writers[kind].table.schema().as_arrow())  # the writer stamps
        arrow = (rows.drop("_topic").select(schema.names).to_arrow().cast(schema) if rows is not None and rows.height
                 else schema.empty_table())  # fmt: skip
        snapshot = self.writers[kind].commit(arrow, {tp: start.get(tp, NO_OFFSET) for tp in end}, end)
        self.committed[kind].update(end)
        return snapshot

    def expected(self, kind: str, symbols: tuple[str, ...], covered: dict[int, int]) -> set[str]:
        """First arrivals of the symbols' ticks below the covered offsets of the source topic."""
        every = pl.concat(self.rows[kind]).filter(pl.col("_topic") == self.topic(kind))
        keep = pl.lit(False)
        for p, e in covered.items():
            keep |= (pl.col("kafka_partition") == p) & (pl.col("kafka_offset") < e)
        return set(every.filter(keep & pl.col("symbol").is_in(list(symbols)))["message_id"].to_list())


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(data_dir=tmp_path / "k2", kafka={"partitions": 4})


@pytest.fixture
def source(settings: Settings) -> FakeSource:
    kafka = settings.kafka
    return FakeSource({kafka.topic("trades"): 4, kafka.topic("quotes"): 4})


@pytest.fixture
def stream(settings: Settings, source: FakeSource) -> Stream:
    return Stream(settings, source)


@pytest.fixture
def hybrid(settings: Settings, source: FakeSource, stream: Stream) -> Iterator[HybridEngine]:
    engine = QueryEngine(stream.catalog, settings.lake.namespace, refresh_interval_s=0)
    h = HybridEngine(settings, engine, hybrid=HybridSettings(prefetch_interval_s=0), source=source)
    yield h
    h.close()
    engine.close()
