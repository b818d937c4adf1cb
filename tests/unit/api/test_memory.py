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
    the API's 1 MiB maps and unmaps each one (fresh pages the kernel must zero every batch).

    In a fresh interpreter: in this one, a free chunk left by earlier tests may serve the buffer
    from the heap whatever the threshold."""
    import subprocess
    import sys

    if not MemoryTrimmer().active:
        pytest.skip("not glibc")
    code = """
import ctypes
from k2.observability.memory import INGEST_MMAP_THRESHOLD, MMAP_THRESHOLD, MemoryTrimmer
libc = ctypes.CDLL("libc.so.6")
if not hasattr(libc, "mallinfo2"):
    print("skip"); raise SystemExit
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                               "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def mapped(threshold):
    trimmer = MemoryTrimmer(interval_s=60, mmap_threshold=threshold)
    trimmer.start()
    trimmer.stop()
    before = libc.mallinfo2().hblks
    buffer = libc.malloc(4 << 20)
    after = libc.mallinfo2().hblks
    libc.free(buffer)
    return after - before
print(mapped(MMAP_THRESHOLD), mapped(INGEST_MMAP_THRESHOLD))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    if out == ["skip"]:
        pytest.skip("glibc without mallinfo2")
    assert out == ["1", "0"]
