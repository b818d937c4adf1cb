"""Message values joined in one buffer with their end offsets (the native consumer's batches).

``decode_batch`` reads the buffer as it is; confluent-kafka's list of ``bytes`` it joins first.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import overload

import numpy as np

__all__ = ["JoinedPayloads"]


class JoinedPayloads(Sequence[bytes]):
    """Message values as one buffer and their end offsets: ``decode_batch`` reads it without a copy.

    Indexing makes a ``bytes`` of one value (the dead-letter and spill paths, a few rows).
    A null value (a tombstone) is ``b""``, which the decoder dead-letters like any short payload.
    """

    __slots__ = ("buf", "ends", "lens", "starts")

    def __init__(self, buf: np.ndarray, ends: np.ndarray) -> None:
        self.buf: np.ndarray = buf
        self.ends: np.ndarray = ends
        self.lens: np.ndarray = np.diff(ends, prepend=0) if len(ends) else np.zeros(0, np.int64)
        self.starts: np.ndarray = ends - self.lens

    def __len__(self) -> int:
        return len(self.ends)

    @overload
    def __getitem__(self, i: int) -> bytes: ...
    @overload
    def __getitem__(self, i: slice) -> list[bytes]: ...
    def __getitem__(self, i: int | slice) -> bytes | list[bytes]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        start = int(self.starts[i])
        return self.buf[start : start + int(self.lens[i])].tobytes()

    def __iter__(self) -> Iterator[bytes]:
        return (self[i] for i in range(len(self)))

    def __contains__(self, value: object) -> bool:
        """Membership without a ``bytes`` per value: only values of the same length are compared."""
        if not isinstance(value, bytes):
            return False
        return any(self[int(i)] == value for i in np.flatnonzero(self.lens == len(value)))

    def take(self, rows: np.ndarray) -> JoinedPayloads:
        """The values at ``rows``, joined again (the ticks of a batch that also held markers)."""
        lens = self.lens[rows]
        if not len(rows):
            return JoinedPayloads(np.zeros(0, np.uint8), np.zeros(0, np.int64))
        gather = np.repeat(self.starts[rows] - (np.cumsum(lens) - lens), lens) + np.arange(int(lens.sum()))
        return JoinedPayloads(self.buf[gather], np.cumsum(lens))
