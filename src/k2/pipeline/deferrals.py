"""Which rows of a range read again the run that committed it had deferred to the spill.

After a crash between a tick table's commit (step 2) and the state's (step 4), or when the state
was lost, the pipeline reads the range again to rebuild the sequence state: rows below the table's
watermark go through the checks but no sink writes them. The rebuild must apply exactly the rows
the committing run applied, and that run sent the rows of deferred symbols to the spill instead of
the checks. Deciding again at today's level goes wrong both ways:

* deferred then, applied now: the state has seen the tick, so its spill copy is a duplicate when
  the back-fill brings it, and the tick is never written (lost);
* written then, deferred now: the state never sees the tick, so it records a gap that did not
  happen, and a re-sent copy of the tick later fills that gap and is written a second time.

The level and tiers that decided are gone, so the decision is read back from what the run left:
a row was deferred if the spill holds a copy of it (its ``k2.source`` header names the row's
offset) and the table does not hold the row itself. An older attempt that crashed before its
tables committed may have spilled a row the committing run then wrote: the table check keeps that
row applied. A row with neither a copy nor a place in the table was a duplicate then; applying it
again changes nothing the verdicts depend on.
"""

from __future__ import annotations

import time

import polars as pl
from confluent_kafka import Consumer, KafkaError, TopicPartition
from pyiceberg.table import Table

from k2 import schemas
from k2.config import Settings
from k2.lake.writer import TableWriter
from k2.observability.logging import get_logger
from k2.pipeline.errors import PipelineError
from k2.resilience.errors import SpillFormatError
from k2.resilience.spill import SpilledRecord

__all__ = ["deferred_rows"]

log = get_logger(__name__)

_STALL_S = 30.0  # no message for this long while the spill's end is not reached: the broker is gone


def deferred_rows(
    settings: Settings,
    writer: TableWriter,
    *,
    kind: str,
    topic: str,
    partition: int,
    start: int,
    end: int,
    spill: str,
    spill_from: int,
) -> set[int]:
    """Offsets in [start, end) of ``topic``/``partition`` whose rows the committing run deferred.

    ``spill_from`` is where the spill partition's own replay starts (its copies of these rows were
    produced after that run read it); a negative value reads the spill partition from its start.

    Raises:
        PipelineError: the spill partition could not be read to its end.
        KafkaException: the broker did not answer the watermark query.
    """
    began = time.monotonic()
    copies = _copies(settings, spill, partition, spill_from, topic, start, end)
    if not copies:
        return set()
    offsets = list(copies)
    decoded = schemas.decode_batch(kind, [copies[o] for o in offsets]).frame
    index = decoded.get_column("_index").to_list() if "_index" in decoded.columns else range(decoded.height)
    spilled = pl.DataFrame(
        {"kafka_offset": [offsets[i] for i in index], "message_id": decoded.get_column("message_id")},
        schema={"kafka_offset": pl.Int64, "message_id": pl.String},
    )
    held = _held(writer.table, partition, start, end, spilled)
    deferred = set(
        spilled.join(held, on=["kafka_offset", "message_id"], how="anti")["kafka_offset"].to_list()
    )
    log.info("replayed range's deferrals read back", topic=topic, partition=partition, start=start,
             end=end, spilled=spilled.height, deferred=len(deferred),
             seconds=round(time.monotonic() - began, 3))  # fmt: skip
    return deferred


def _copies(
    settings: Settings, spill: str, partition: int, spill_from: int, topic: str, start: int, end: int
) -> dict[int, bytes]:
    """Payloads of the spill copies of ``topic``/``partition`` rows in [start, end), by source offset."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap,
            "group.id": f"{settings.pipeline.group_id}.rebuild",  # assign() only: never joins the group
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",  # a range retention took meanwhile: read what is left
            **settings.kafka.client,
        }
    )
    out: dict[int, bytes] = {}
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(spill, partition), timeout=30.0)
        first = max(low, spill_from)
        if low > spill_from >= 0:
            log.warning("spill retention took copies the rebuild would read", spill=spill, partition=partition,
                        wanted_from=spill_from, kept_from=low)  # fmt: skip
        if first >= high:
            return out
        consumer.assign([TopicPartition(spill, partition, first)])
        position, quiet_since = first, time.monotonic()
        while position < high:
            messages = consumer.consume(10_000, 1.0)
            if not messages:
                if time.monotonic() - quiet_since > _STALL_S:
                    raise PipelineError(f"{spill}[{partition}] stopped at {position} before its end {high}")
                continue
            quiet_since = time.monotonic()
            for msg in messages:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        return out
                    raise PipelineError(f"reading {spill}[{partition}] failed: {err}")
                position = (msg.offset() or 0) + 1
                try:
                    record = SpilledRecord.from_message(msg)
                except SpillFormatError:  # not a copy of ours (the back-fill dead-letters it)
                    continue
                mine = record.source_topic == topic and record.source_partition == partition
                if mine and start <= record.source_offset < end:
                    out[record.source_offset] = record.value
        return out
    finally:
        consumer.close()


def _held(table: Table, partition: int, start: int, end: int, wanted: pl.DataFrame) -> pl.DataFrame:
    """The ``wanted`` (kafka_offset, message_id) pairs that the table holds. Lineage in the range
    includes spill rows (they carry spill offsets): one that shares an offset has another id, or is
    the tick itself. Streamed, so a long range (a lost state store) is never held whole."""
    table = table.refresh()
    found = [wanted.clear()]
    if table.current_snapshot() is None:
        return found[0]
    scan = table.scan(
        row_filter=f"kafka_partition = {partition} and kafka_offset >= {start} and kafka_offset < {end}",
        selected_fields=("kafka_offset", "message_id"),
    )
    for batch in scan.to_arrow_batch_reader():
        rows = pl.from_arrow(batch)
        assert isinstance(rows, pl.DataFrame)
        rows = rows.select(pl.col("kafka_offset").cast(pl.Int64), pl.col("message_id").cast(pl.String))
        found.append(rows.join(wanted, on=["kafka_offset", "message_id"], how="semi"))
    return pl.concat(found)
