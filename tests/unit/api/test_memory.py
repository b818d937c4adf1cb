from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from k2.api.memory import MemoryTrimmer


def test_trims_every_interval_until_stopped() -> None:
    trimmer = MemoryTrimmer(interval_s=0.02)
    if not trimmer.active:
        pytest.skip("not glibc: nothing to trim")
    trimmer.start()
    time.sleep(0.3)
    trimmer.stop()
    done = trimmer.trims
    assert done >= 3
    time.sleep(0.1)
    assert trimmer.trims == done  # stopped means stopped


def test_the_app_trims_while_it_serves(make_client: Callable[..., TestClient]) -> None:
    if not MemoryTrimmer().active:
        pytest.skip("not glibc: nothing to trim")
    with make_client() as client:  # the context runs the lifespan
        assert client.get("/v1/latest", params={"symbols": "BHP"}).status_code == 200
        assert "k2-malloc-trim" in {t.name for t in threading.enumerate()}
    assert "k2-malloc-trim" not in {t.name for t in threading.enumerate()}


def test_a_trim_releases_arrows_pool_too() -> None:
    import pyarrow as pa

    trimmer = MemoryTrimmer()
    if not trimmer.active:
        pytest.skip("not glibc: nothing to trim")
    table = pa.table({"a": list(range(200_000))}).sort_by("a")
    del table
    trimmer.trim()  # malloc_trim and release_unused: neither may fail nor leak the count
    assert trimmer.trims == 1


def test_the_mmap_threshold_decides_whether_a_buffer_gets_its_own_mapping() -> None:
    """The ingester's threshold keeps its per-batch buffers (1-16 MiB) on the heap, reused, where
    the API's 1 MiB maps and unmaps each one (fresh pages the kernel must zero every batch)."""
    import ctypes

    from k2.observability.memory import INGEST_MMAP_THRESHOLD, MMAP_THRESHOLD

    libc = ctypes.CDLL("libc.so.6")
    if not MemoryTrimmer().active or not hasattr(libc, "mallinfo2"):
        pytest.skip("not glibc 2.33+: no mallinfo2")

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                          "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]  # fmt: skip

    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]

    def mapped_by_a_4_mib_buffer(threshold: int) -> int:
        trimmer = MemoryTrimmer(interval_s=60, mmap_threshold=threshold)
        trimmer.start()
        trimmer.stop()
        before = libc.mallinfo2().hblks
        buffer = libc.malloc(4 << 20)
        after = libc.mallinfo2().hblks
        libc.free(buffer)
        return int(after - before)

    try:
        assert mapped_by_a_4_mib_buffer(MMAP_THRESHOLD) == 1
        assert mapped_by_a_4_mib_buffer(INGEST_MMAP_THRESHOLD) == 0
    finally:  # the process-wide default the API tests expect
        restore = MemoryTrimmer(interval_s=60)
        restore.start()
        restore.stop()
