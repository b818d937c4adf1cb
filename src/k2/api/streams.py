"""Bounds on long responses (/v1/replay, /v1/stream): how many, for how long, and waits that hold no thread.

Every streamed response holds a ``StreamLease``: one of ``api.max_streams_per_key`` slots of its
caller and one of ``api.max_streams`` in all, released when the body ends, fails, the client goes
away, or the response object is dropped unsent. A lease also carries the stream's deadline
(``api.stream_max_s``): bodies stop at it, and ``BoundedStreamingResponse`` cuts the connection a
little later if a client that stopped reading keeps the last write pending.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from k2.api.errors import TooManyStreamsError
from k2.observability.logging import get_logger

__all__ = ["BoundedStreamingResponse", "StreamLease", "StreamSlots"]

log = get_logger("k2.api.streams")

#: How often a waiting stream looks at its deadline and at the client (seconds).
_TICK_S = 1.0
#: How long past its deadline a stream whose client stopped reading may keep its connection.
_GRACE_S = 10.0


class StreamLease:
    """One open stream's slot and deadline; ``release`` is idempotent."""

    def __init__(self, slots: StreamSlots, caller: str, max_s: float, clock: Callable[[], float]) -> None:
        self._slots = slots
        self.caller = caller
        self._clock = clock
        self.deadline = clock() + max_s
        self._released = False

    def remaining(self) -> float:
        """Seconds left before the stream must end (0 once it is over)."""
        return max(0.0, self.deadline - self._clock())

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._slots._release(self.caller)

    async def sleep(self, seconds: float, request: Request | None = None) -> bool:
        """Wait ``seconds`` without holding a thread; False if the deadline or a disconnect came first.

        Waits in short steps so that a client that went away is noticed within ``_TICK_S``
        even on servers that only report a disconnect when asked.
        """
        end = self._clock() + seconds
        while True:
            now = self._clock()
            if now >= self.deadline:
                return False
            if now >= end:
                return True
            await asyncio.sleep(min(_TICK_S, end - now, self.deadline - now))
            if request is not None and await request.is_disconnected():
                return False


class StreamSlots:
    """Open-stream counts per caller and in total (thread-safe; memory: one entry per open caller)."""

    def __init__(
        self, per_key: int, total: int, max_s: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.per_key = per_key
        self.total = total
        self.max_s = max_s
        self._clock = clock
        self._open: dict[str, int] = {}
        self._count = 0
        self._lock = threading.Lock()

    def acquire(self, caller: str) -> StreamLease:
        """A lease for one more stream of ``caller``.

        Raises:
            TooManyStreamsError: the caller, or the server, is at its cap (429).
        """
        with self._lock:
            if self._open.get(caller, 0) >= self.per_key:
                raise TooManyStreamsError(self.per_key, "api.max_streams_per_key")
            if self._count >= self.total:
                raise TooManyStreamsError(self.total, "api.max_streams")
            self._open[caller] = self._open.get(caller, 0) + 1
            self._count += 1
        return StreamLease(self, caller, self.max_s, self._clock)

    def open_streams(self, caller: str | None = None) -> int:
        with self._lock:
            return self._count if caller is None else self._open.get(caller, 0)

    def _release(self, caller: str) -> None:
        with self._lock:
            left = self._open.get(caller, 0) - 1
            if left > 0:
                self._open[caller] = left
            else:
                self._open.pop(caller, None)  # the table holds open callers only: it shrinks
            self._count -= 1


class BoundedStreamingResponse(StreamingResponse):
    """A streaming response that gives its lease back however it ends, and never outlives it by much."""

    def __init__(self, content: AsyncIterator[bytes], lease: StreamLease, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self.lease = lease
        # A response that is never sent (the client left before the headers) still frees its slot.
        weakref.finalize(self, lease.release)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with asyncio.timeout(self.lease.remaining() + _GRACE_S):
                await super().__call__(scope, receive, send)
        except TimeoutError:  # the body ended at its deadline but the client is not reading
            log.info("stream cut: client not reading", caller=self.lease.caller)
        finally:
            self.lease.release()
