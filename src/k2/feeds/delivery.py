"""A batch of messages in the order a feed delivers them: what a feed hands to the producer.

Trades and quotes travel as canonical frames, already in delivery order; ``raw`` holds payloads that
are deliberately not valid K2 Avro (the simulator's malformed faults) for the tick topics; and
``order`` records the interleaving of the three, so that a caller pacing at N messages per second
can cut the batch anywhere without changing any topic's order.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import polars as pl

__all__ = ["QUOTE", "RAW", "TRADE", "Delivery", "RawMessage"]

#: Codes of ``Delivery.order``.
TRADE, QUOTE, RAW = 0, 1, 2


@dataclass(frozen=True)
class RawMessage:
    """A payload sent as is to the tick topic of ``kind`` (key = symbol)."""

    kind: str
    key: bytes | None
    value: bytes
    reason: str


@dataclass
class Delivery:
    """Messages in delivery order; ``len(order) == trades.height + quotes.height + len(raw)``."""

    trades: pl.DataFrame
    quotes: pl.DataFrame
    raw: list[RawMessage] = field(default_factory=list)
    order: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int8))

    def __post_init__(self) -> None:
        expected = self.trades.height + self.quotes.height + len(self.raw)
        if len(self.order) != expected:
            raise ValueError(f"order has {len(self.order)} entries for {expected} messages")

    def __len__(self) -> int:
        return len(self.order)

    def frame(self, kind: str) -> pl.DataFrame:
        """The trades or quotes frame."""
        return self.trades if kind == "trades" else self.quotes

    def split(self, size: int) -> Iterator[Delivery]:
        """Consecutive slices of at most ``size`` messages, each keeping the delivery order."""
        if size < 1:
            raise ValueError("size must be at least 1")
        return self.split_at(range(size, len(self), size))

    def split_at(self, cuts: Iterable[int]) -> Iterator[Delivery]:
        """Consecutive slices between the increasing message indexes ``cuts`` (empty slices skipped)."""
        bounds = [0, *(c for c in cuts if 0 < c < len(self)), len(self)]
        if len(bounds) == 2:
            if len(self):
                yield self
            return
        before = np.zeros((3, len(self.order) + 1), dtype=np.int64)
        for code in (TRADE, QUOTE, RAW):
            before[code, 1:] = np.cumsum(self.order == code)
        for lo, hi in itertools.pairwise(bounds):
            if hi <= lo:
                continue
            t0, t1 = int(before[TRADE, lo]), int(before[TRADE, hi])
            q0, q1 = int(before[QUOTE, lo]), int(before[QUOTE, hi])
            r0, r1 = int(before[RAW, lo]), int(before[RAW, hi])
            yield Delivery(
                self.trades.slice(t0, t1 - t0),
                self.quotes.slice(q0, q1 - q0),
                self.raw[r0:r1],
                self.order[lo:hi],
            )

    @staticmethod
    def interleave(trades_keys: np.ndarray, quotes_keys: np.ndarray, raw_keys: np.ndarray) -> np.ndarray:
        """The ``order`` array merging three key-sorted sequences (keys: rows of a 2-D int64 array).

        Each argument is an ``(n, k)`` array of sort keys, already sorted; keys are unique across all
        three, so the merge keeps each sequence's own order.
        """
        keys = np.concatenate([trades_keys, quotes_keys, raw_keys])
        codes = np.concatenate(
            [
                np.full(len(trades_keys), TRADE, dtype=np.int8),
                np.full(len(quotes_keys), QUOTE, dtype=np.int8),
                np.full(len(raw_keys), RAW, dtype=np.int8),
            ]
        )
        if len(keys) == 0:
            return codes
        perm = np.lexsort(keys.T[::-1])
        return codes[perm]
