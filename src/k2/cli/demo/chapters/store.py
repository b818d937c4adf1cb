"""Chapter 3, store: each Iceberg snapshot carries the Kafka offsets it covers; time travel reads an older one."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from k2.cli.demo.stage import Stage
from k2.config import KafkaSettings

__all__ = ["high_watermarks", "show_offsets", "store"]


def store(stage: Stage) -> None:
    from k2.lake import open_catalog
    from k2.lake.offsets import snapshot_offsets

    settings = stage.settings
    table = open_catalog(settings).load_table(f"{settings.lake.namespace}.trades")
    snaps = sorted(table.snapshots(), key=lambda s: s.timestamp_ms)
    stage.say(
        f"trades has {len(snaps)} snapshots; the newest, with the Kafka offsets in their summary (k2.offsets):"
    )
    for snap in snaps[-3:][::-1]:
        added = int(snap.summary.additional_properties.get("added-records", 0)) if snap.summary else 0
        at = datetime.fromtimestamp(snap.timestamp_ms / 1000, UTC).strftime("%H:%M:%S.%f")[:-3]
        stage.say(
            f"  {snap.snapshot_id} at {at} +{added:,} rows  {show_offsets(snapshot_offsets(table, snap))}"
        )

    backwards = []
    for parent, child in itertools.pairwise(snaps):
        before, after = snapshot_offsets(table, parent), snapshot_offsets(table, child)
        backwards += [tp for tp, o in before.items() if after.get(tp, -1) < o]
    stage.check("no snapshot's offsets go back from its parent's", not backwards, f"{len(snaps)} snapshots")
    topic = settings.kafka.topic("trades")
    newest = {tp: o for tp, o in snapshot_offsets(table, snaps[-1]).items() if tp[0] == topic}
    ends = high_watermarks(settings.kafka, topic)
    stage.say(f"Kafka's high watermarks of {topic}: {show_offsets(ends)}")
    stage.check(
        "the newest snapshot covers the topic to its end", newest == ends, "rows + offsets in one commit"
    )

    # time travel: the snapshot nearest half the rows held only what was committed up to it
    current = table.scan().to_arrow().num_rows
    held = [(int(s.summary.additional_properties.get("total-records", 0)), s) for s in snaps if s.summary]
    rows_then, old = min(held, key=lambda h: abs(h[0] - current / 2))
    read_then = table.scan(snapshot_id=old.snapshot_id, selected_fields=("message_id",)).to_arrow().num_rows
    at = datetime.fromtimestamp(old.timestamp_ms / 1000, UTC).strftime("%H:%M:%S")
    stage.say(f"time travel to snapshot {old.snapshot_id} ({at}): {read_then:,} trades then, {current:,} now")
    stage.check(
        "time travel reads exactly what the earlier snapshot held",
        read_then == rows_then and read_then != current,
        f"{read_then:,} rows read = {rows_then:,} in its summary, now {current:,}",
    )


def show_offsets(offsets: dict[tuple[str, int], int]) -> str:
    """``topic[p0,p1..]: o0 o1 ..`` per topic, compactly."""
    topics: dict[str, list[str]] = {}
    for (topic, partition), offset in sorted(offsets.items()):
        topics.setdefault(topic, []).append(f"p{partition}={offset:,}")
    return "; ".join(f"{t}: {' '.join(parts)}" for t, parts in topics.items())


def high_watermarks(kafka: KafkaSettings, topic: str) -> dict[tuple[str, int], int]:
    """The next offset of every partition of ``topic`` (what a fully caught-up reader covers)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": kafka.bootstrap, "group.id": "k2-demo-watermarks", **kafka.client}
    )
    try:
        meta = consumer.list_topics(topic, timeout=10)
        return {
            (topic, p): consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in meta.topics[topic].partitions
        }
    finally:
        consumer.close()
