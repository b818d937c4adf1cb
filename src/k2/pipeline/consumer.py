"""The ingest consumer's librdkafka configuration, shared with the benchmark's raw baseline.

The baseline must read with the same fetch settings as K2, or the ratio measures configuration.
"""

from __future__ import annotations

from typing import Any

from k2.config import Settings

__all__ = ["FETCH", "consumer_config"]

#: Fetch sizes for a backlog of small messages: large fetches, and a deep local queue so that
#: librdkafka keeps fetching while Python decodes (queued.min.messages is per partition).
FETCH: dict[str, Any] = {
    "fetch.max.bytes": 64 * 1024 * 1024,
    "max.partition.fetch.bytes": 16 * 1024 * 1024,
    "queued.max.messages.kbytes": 256 * 1024,
    "queued.min.messages": 500_000,
}


def consumer_config(settings: Settings) -> dict[str, Any]:
    """The pipeline consumer: manual offsets (they live in Iceberg snapshots), range assignment."""
    pipeline = settings.pipeline
    return {
        "bootstrap.servers": settings.kafka.bootstrap,
        "group.id": pipeline.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "partition.assignment.strategy": "range",
        **FETCH,
        "session.timeout.ms": pipeline.session_timeout_ms,
        # also the rebalance timeout: how long a join waits for members that vanished
        "max.poll.interval.ms": 60000,
        **({"group.instance.id": pipeline.instance_id} if pipeline.instance_id else {}),
        **settings.kafka.client,
    }
