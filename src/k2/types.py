"""Type aliases shared across K2's packages."""

from __future__ import annotations

from typing import Literal

__all__ = ["Offsets", "ServiceName", "StreamKind", "TopicPartition"]

#: The two tick streams K2 ingests. Reference data travels beside them.
StreamKind = Literal["trades", "quotes"]
#: (topic, partition)
TopicPartition = tuple[str, int]
#: Next offset to read per (topic, partition): Kafka's convention, so a resume seeks straight to it.
Offsets = dict[TopicPartition, int]
ServiceName = Literal["kafka", "redis"]
