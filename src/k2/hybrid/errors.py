"""Errors of the hybrid reader, each with the HTTP status the API answers with."""

from __future__ import annotations

from k2.errors import K2Error
from k2.types import TopicPartition

__all__ = ["HybridError", "RoutingError", "TailReadError"]


class HybridError(K2Error):
    """The live tail could not be merged with Iceberg; the base of this package's errors."""

    status_code: int = 500
    error: str = "hybrid_failed"


class TailReadError(HybridError):
    """Kafka refused or failed a tail read (broker down, topic missing).

    Attributes:
        topic: the topic being read.
        partition: the partition, when one is concerned.
        code: librdkafka's error name, when Kafka gave one.
    """

    status_code = 503
    error = "kafka_unavailable"

    def __init__(
        self, message: str, *, topic: str, partition: int | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.topic = topic
        self.partition = partition
        self.code = code

    @property
    def topic_partition(self) -> TopicPartition | None:
        return None if self.partition is None else (self.topic, self.partition)


class RoutingError(HybridError):
    """A symbol's rows live in a partition its key does not hash to (another partitioner wrote them).

    Raised internally and handled by reading every partition; exposed for logs and tests.

    Attributes:
        symbols: the symbols concerned.
        expected: partitions the configured partitioner gives.
        found: partitions the lake's lineage shows.
    """

    def __init__(self, symbols: tuple[str, ...], expected: set[int], found: set[int]) -> None:
        super().__init__(
            f"rows of {', '.join(symbols)} come from partitions {sorted(found)}, not {sorted(expected)}: "
            "the producer's partitioner differs from kafka.client['partitioner']"
        )
        self.symbols = symbols
        self.expected = expected
        self.found = found
