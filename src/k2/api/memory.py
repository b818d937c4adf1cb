"""The server's memory trimmer: shared with the ingester, so it lives in ``k2.observability.memory``."""

from __future__ import annotations

from k2.observability.memory import MMAP_THRESHOLD, MemoryTrimmer

__all__ = ["MMAP_THRESHOLD", "MemoryTrimmer"]
