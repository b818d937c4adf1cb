"""Give freed memory back to the system (glibc only; elsewhere nothing): the API and the ingester.

Under load the server's live Python objects, caches and DuckDB buffers stay flat, yet its RSS
climbs: glibc keeps what the worker threads free in their own arenas, fragmented, instead of
returning it (a soak showed 600 MiB free inside malloc arenas beside 100 MiB in use, growing
8 MiB/min). Two glibc settings stop that: a fixed mmap threshold, so that large buffers (encoded
responses, Arrow batches) are mapped on their own and unmapped when freed, instead of the
threshold creeping up to 32 MiB and parking them in the arenas; and ``malloc_trim(0)`` every
``interval_s``, which hands whole free pages inside every arena back to the kernel.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import threading

from k2.observability.logging import get_logger

__all__ = ["INGEST_MMAP_THRESHOLD", "MMAP_THRESHOLD", "MemoryTrimmer"]

log = get_logger("k2.memory")

_M_MMAP_THRESHOLD = -3
#: Allocations from this size up get their own mapping, returned to the system when freed.
MMAP_THRESHOLD = 1 << 20
#: The ingester's: each batch allocates buffers of 1-16 MiB (the consumer's columns, Arrow and
#: Parquet buffers, librdkafka's fetches). Mapped and unmapped per batch, their fresh pages cost
#: the kernel's page zeroing: a fifth of the process's CPU at 1 MiB (perf, issue #17). From the
#: heap they are reused; the trims every interval still return what stays free.
INGEST_MMAP_THRESHOLD = 32 << 20


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def _release_arrow() -> None:
    """Arrow's allocator keeps freed pages for reuse (measured: 16 of 147 MB given back after a burst
    of sorts on two threads); only if pyarrow is loaded already (never imported just for this)."""
    import sys

    arrow = sys.modules.get("pyarrow")
    if arrow is not None:
        arrow.default_memory_pool().release_unused()


class MemoryTrimmer:
    """A daemon thread that trims glibc's arenas every ``interval_s`` seconds until ``stop``."""

    def __init__(self, interval_s: float = 30.0, mmap_threshold: int = MMAP_THRESHOLD) -> None:
        self.interval_s = interval_s
        self.mmap_threshold = mmap_threshold
        self.trims = 0
        self._libc = _glibc()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def active(self) -> bool:
        return self._libc is not None

    def start(self) -> None:
        """Fix the mmap threshold and start trimming (no-op off glibc, or if already started)."""
        if self._libc is None or self._thread is not None:
            return
        self._libc.mallopt(_M_MMAP_THRESHOLD, self.mmap_threshold)
        self._thread = threading.Thread(target=self._run, name="k2-malloc-trim", daemon=True)
        self._thread.start()

    def trim(self) -> None:
        """Return free pages of every arena to the system now, Arrow's own pool (mimalloc) too."""
        if self._libc is not None:
            self._libc.malloc_trim(0)
            _release_arrow()
            self.trims += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.trim()
            except Exception:  # never let housekeeping take the server down
                log.warning("malloc_trim failed", exc_info=True)
                return
