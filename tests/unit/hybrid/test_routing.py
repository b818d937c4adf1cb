from __future__ import annotations

import zlib

import pytest

from k2.hybrid.routing import PartitionRouter, crc32_partition, murmur2, murmur2_partition

# org.apache.kafka.common.utils.UtilsTest#testMurmur2
KAFKA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize(("key", "expected"), KAFKA_MURMUR2.items())
def test_murmur2_is_kafkas(key: bytes, expected: int) -> None:
    assert murmur2(key) == expected


def test_partitioners() -> None:
    assert crc32_partition(b"BHP", 4) == zlib.crc32(b"BHP") % 4
    assert murmur2_partition(b"21", 7) == (-973932308 & 0x7FFFFFFF) % 7


def test_default_router_is_librdkafkas_crc32() -> None:
    router = PartitionRouter(None)
    assert router.partitions(["BHP"], 8) == [zlib.crc32(b"BHP") % 8]
    assert router.partitions(["BHP", "RIO", "BHP"], 8) == sorted(
        {zlib.crc32(s) % 8 for s in (b"BHP", b"RIO")}
    )
    assert PartitionRouter("murmur2_random").partitions(["21"], 7) == [murmur2_partition(b"21", 7)]


@pytest.mark.parametrize(("partitioner", "routing"), [("random", "auto"), ("fnv1a", "auto"), (None, "all")])
def test_unknown_partitioners_and_routing_all_read_every_partition(
    partitioner: str | None, routing: str
) -> None:
    router = PartitionRouter(partitioner, routing)  # type: ignore[arg-type]
    assert not router.exact
    assert router.partitions(["BHP"], 3) == [0, 1, 2]


def test_distrust_switches_to_every_partition() -> None:
    router = PartitionRouter(None)
    router.distrust("rows of BHP in partition 3")
    assert not router.exact and router.partitions(["BHP"], 4) == [0, 1, 2, 3]
