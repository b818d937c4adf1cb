"""Contracts of the state stores: sequence state and exact dedup, each fenced by Kafka offsets.

Both stores advance, in the same atomic write as the state, a *token* per (topic, partition): the
next Kafka offset the stored state reflects. A writer names the token it believes is stored
(``expected``); if the store holds anything else the write is refused with
:class:`~k2.state.errors.StaleStateError` and nothing is written. A consumer that lost a partition
in a rebalance therefore cannot overwrite the state of its successor, and after a crash the token
says exactly which offsets to replay (see docs/state.md, "Rebuild").
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import polars as pl

from k2.state.ids import Ids
from k2.state.model import ClockKey, KeyState, PartitionClock, StateKey

__all__ = ["DedupStore", "PartitionToken", "SequenceStore", "batch_tokens"]


@dataclass(frozen=True, slots=True)
class PartitionToken:
    """Advance (topic, partition) from ``expected`` to ``offset`` (both: next offset to read)."""

    topic: str
    partition: int
    expected: int | None
    """What the writer believes is stored; None: the store has never seen this partition."""
    offset: int


def batch_tokens(topic: str, batch: pl.DataFrame, expected: Mapping[int, int | None]) -> list[PartitionToken]:
    """Tokens for a batch: per partition in ``_partition``, max(``_offset``) + 1.

    Args:
        topic: the topic the batch was read from.
        batch: rows with ``_partition`` and ``_offset``.
        expected: the token this consumer last committed (or loaded at assignment) per partition.
    """
    if batch.is_empty():
        return []
    ends = batch.group_by("_partition").agg(pl.col("_offset").max()).sort("_partition")
    return [
        PartitionToken(topic, int(p), expected.get(int(p)), int(o) + 1)
        for p, o in zip(ends["_partition"].to_list(), ends["_offset"].to_list(), strict=True)
    ]


class _Closeable:
    def close(self) -> None:
        """Release the connection; the stored state stays."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class SequenceStore(_Closeable, ABC):
    """Per-key sequence state plus per-partition tokens, written atomically together."""

    backend: str = "abstract"

    @abstractmethod
    def load(self, keys: Iterable[StateKey]) -> dict[StateKey, KeyState]:
        """States of the given keys in one round trip; keys never committed are absent.

        Raises:
            StateStoreError: the backend failed.
        """

    @abstractmethod
    def load_clocks(self, keys: Iterable[ClockKey]) -> dict[ClockKey, PartitionClock]:
        """Partition clocks (exchange clock + young-hole index) in one round trip; absent if never committed.

        Raises:
            StateStoreError: the backend failed.
        """

    @abstractmethod
    def commit(
        self,
        states: Mapping[StateKey, KeyState],
        tokens: Sequence[PartitionToken],
        clocks: Mapping[ClockKey, PartitionClock] | None = None,
    ) -> None:
        """Write all states and clocks and advance all tokens, atomically: everything or nothing.

        Raises:
            StaleStateError: a stored token differs from its ``expected``; nothing was written.
            StateStoreError: the backend failed; nothing was written.
        """

    @abstractmethod
    def token(self, topic: str, partition: int) -> int | None:
        """The stored token (next offset the state reflects), None if never committed.

        Raises:
            StateStoreError: the backend failed.
        """


class DedupStore(_Closeable, ABC):
    """Exact set of recently seen message ids, partitioned into time generations.

    Generation g holds the ids whose timestamp falls in [g * span, (g + 1) * span); dropping a
    generation forgets its ids at once, which is how the window slides (same scheme as the Bloom).
    """

    backend: str = "abstract"
    #: ``add`` keys on the ids' 16 bytes, so the dedup hands it the keys it computed already; a
    #: store that keeps the ids' text (Redis: as the feed spelled it) gets the text.
    takes_keys: bool = False

    @abstractmethod
    def contains(self, ids: Ids, generations: Sequence[int]) -> list[bool]:
        """Which ids are stored in any of the generations; one round trip.

        Raises:
            ValueError: an id is not 32 hex digits.
            StateStoreError: the backend failed.
        """

    @abstractmethod
    def add(
        self,
        ids_by_generation: Mapping[int, Ids],
        tokens: Sequence[PartitionToken],
        drop_before: int,
    ) -> None:
        """Add ids, drop every generation < drop_before and advance tokens, atomically.

        Raises:
            ValueError: an id is not 32 hex digits; nothing was written.
            StaleStateError: a stored token differs from its ``expected``; nothing was written.
            StateStoreError: the backend failed.
        """

    @abstractmethod
    def ids(self, generation: int) -> list[str]:
        """All ids of one generation (to rebuild a Bloom filter that was lost).

        Raises:
            StateStoreError: the backend failed.
        """

    @abstractmethod
    def generations(self) -> list[int]:
        """The generations that hold ids, ascending.

        Raises:
            StateStoreError: the backend failed.
        """

    @abstractmethod
    def tokens(self) -> dict[tuple[str, int], int]:
        """Every stored token of this store's namespace.

        Raises:
            StateStoreError: the backend failed.
        """
