"""Which Kafka partitions hold a symbol: the producer's partitioner, recomputed here.

K2 keys every tick by its symbol, so a one-symbol query needs one partition of the tail
(DESIGN.md, invariant 2). The partition of a key is decided by the *producer's* partitioner, and
confluent-kafka (librdkafka) defaults to ``consistent_random``: CRC-32 of the key modulo the
partition count, not the Java client's murmur2. K2's ``TickProducer`` sets no partitioner, so the
router follows ``kafka.client["partitioner"]`` exactly as the producer does. A partitioner this
module cannot recompute (``random``, ``fnv1a``…) means every partition is read.

A wrong guess would silently hide ticks, so the engine checks the guess against data on every
query: the history rows of the symbols carry their ``kafka_partition`` lineage, and a row from a
partition the router did not name switches the router to reading every partition.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Iterable

from k2.config.hybrid import Routing
from k2.observability.logging import get_logger

__all__ = ["PartitionRouter", "crc32_partition", "murmur2", "murmur2_partition"]

log = get_logger(__name__)

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (``org.apache.kafka.common.utils.Utils.murmur2``): a signed 32-bit hash."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    whole = length - length % 4
    for i in range(0, whole, 4):
        k = data[i] | data[i + 1] << 8 | data[i + 2] << 16 | data[i + 3] << 24
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length % 4
    if rest == 3:
        h ^= data[whole + 2] << 16
    if rest >= 2:
        h ^= data[whole + 1] << 8
    if rest >= 1:
        h ^= data[whole]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def murmur2_partition(key: bytes, partitions: int) -> int:
    """librdkafka's ``murmur2``/``murmur2_random`` (the Java client's default for keyed messages)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def crc32_partition(key: bytes, partitions: int) -> int:
    """librdkafka's ``consistent``/``consistent_random`` (its default): CRC-32 of the key."""
    return zlib.crc32(key) % partitions


_PARTITIONERS: dict[str, Callable[[bytes, int], int]] = {
    "consistent": crc32_partition,
    "consistent_random": crc32_partition,
    "murmur2": murmur2_partition,
    "murmur2_random": murmur2_partition,
}
#: librdkafka's default ``partitioner``.
DEFAULT_PARTITIONER = "consistent_random"


class PartitionRouter:
    """Symbol -> partition, as the producer computes it; or "every partition" when unknown.

    Args:
        partitioner: the producer's librdkafka ``partitioner`` (None: librdkafka's default).
        routing: ``auto`` (recompute) or ``all`` (always read every partition).
    """

    def __init__(self, partitioner: str | None, routing: Routing = "auto") -> None:
        name = partitioner or DEFAULT_PARTITIONER
        self.partitioner = name
        self._hash = _PARTITIONERS.get(name) if routing == "auto" else None
        if routing == "auto" and self._hash is None:
            log.warning("partitioner cannot be recomputed; the tail reads every partition", partitioner=name)
        self._lock = threading.Lock()

    @property
    def exact(self) -> bool:
        """True while symbols are routed to single partitions (False: every partition is read)."""
        return self._hash is not None

    def partitions(self, symbols: Iterable[str], count: int) -> list[int]:
        """The partitions, ascending, that can hold ticks of ``symbols`` among ``count`` partitions."""
        fn = self._hash
        if fn is None or count < 1:
            return list(range(count))
        return sorted({fn(s.encode(), count) for s in symbols})

    def distrust(self, reason: str) -> None:
        """Stop routing: from now on every partition is read (after data contradicted the hash)."""
        with self._lock:
            if self._hash is not None:
                log.warning("symbol routing disabled; the tail reads every partition", reason=reason)
                self._hash = None
