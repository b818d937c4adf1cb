"""Synthetic tick batches with the columns the tracker needs; for tests and benchmarks.

Message ids follow the canonical contract (blake2b-128 of ``kind|exchange|symbol|session|sequence``)
so dedup sees realistic ids; prices and sizes are left out because state never reads them.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Sequence
from datetime import UTC, date, datetime

import numpy as np
import polars as pl

__all__ = ["SyntheticFeed", "make_batch", "message_id"]

_T0 = int(datetime(2024, 3, 4, tzinfo=UTC).timestamp() * 1_000_000)


def message_id(kind: str, exchange: str, symbol: str, session: date, sequence: int) -> str:
    """The canonical message id of one tick."""
    text = f"{kind}|{exchange}|{symbol}|{session.isoformat()}|{sequence}"
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def make_batch(
    kind: str,
    rows: Sequence[tuple[str, str, date, int]],
    *,
    ts: Sequence[int] | None = None,
    partitions: int = 4,
    first_offsets: dict[int, int] | None = None,
) -> pl.DataFrame:
    """A batch from (exchange, symbol, session, sequence) rows, in the given arrival order.

    Args:
        ts: exchange time per row in µs since the epoch; default: 1 ms apart.
        partitions: symbols are spread over this many partitions by CRC32, like a keyed producer.
        first_offsets: next offset per partition (updated in place, so batches can follow each other).
    """
    offsets = first_offsets if first_offsets is not None else {}
    parts, offs = [], []
    for _, sym, _, _ in rows:
        p = zlib.crc32(sym.encode()) % partitions
        o = offsets.get(p, 0)
        offsets[p] = o + 1
        parts.append(p)
        offs.append(o)
    times = list(ts) if ts is not None else [_T0 + 1000 * i for i in range(len(rows))]
    return pl.DataFrame(
        {
            "message_id": [message_id(kind, e, s, d, q) for e, s, d, q in rows],
            "exchange": [r[0] for r in rows],
            "symbol": [r[1] for r in rows],
            "session": [r[2] for r in rows],
            "sequence": [r[3] for r in rows],
            "exchange_ts": pl.Series(times, dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
            "_partition": pl.Series(parts, dtype=pl.Int32),
            "_offset": pl.Series(offs, dtype=pl.Int64),
        },
        schema_overrides={"session": pl.Date, "sequence": pl.Int64},
    )


class SyntheticFeed:
    """Endless batches over many symbols, mostly in order, with a few drops, duplicates and swaps.

    Args:
        symbols: number of symbols (one exchange, one session).
        fault_rate: probability per tick of each fault kind (skip one sequence, repeat an earlier
            tick, swap with the next tick of the same symbol).
        seed: numpy generator seed; the same seed gives the same stream.
    """

    def __init__(
        self, kind: str = "trades", *, symbols: int = 1000, fault_rate: float = 0.0005, seed: int = 7
    ) -> None:
        self.kind = kind
        self.rng = np.random.default_rng(seed)
        self.names = np.array([f"S{i:05d}" for i in range(symbols)], dtype=object)
        self.next_seq = np.ones(symbols, dtype=np.int64)
        self.fault_rate = fault_rate
        self.session = date(2024, 3, 4)
        self.clock = _T0
        self.offset = 0

    def next_batch(self, n: int = 10_000) -> pl.DataFrame:
        """The next n ticks in arrival order."""
        rng, k = self.rng, len(self.names)
        sym = rng.integers(0, k, n)
        order = np.argsort(sym, kind="stable")
        sorted_sym = sym[order]
        starts = np.r_[0, np.flatnonzero(np.diff(sorted_sym)) + 1]
        rank_sorted = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
        skip_sorted = (rng.random(n) < self.fault_rate).astype(np.int64)
        # a skip shifts the tick and every later one of the same symbol by one: a lost sequence
        csum = np.cumsum(skip_sorted)
        skips_sorted = csum - np.repeat(csum[starts] - skip_sorted[starts], np.diff(np.r_[starts, n]))
        seq_sorted = self.next_seq[sorted_sym] + rank_sorted + skips_sorted
        seq = np.empty(n, dtype=np.int64)
        seq[order] = seq_sorted
        last = np.zeros(k, dtype=np.int64)
        np.maximum.at(last, sym, seq)
        touched = np.bincount(sym, minlength=k) > 0
        self.next_seq[touched] = last[touched] + 1
        self._swap(sym, seq)
        dup = np.flatnonzero((rng.random(n) < self.fault_rate) & (seq > 1))
        seq[dup] -= 1  # repeats the previous tick of that symbol (or fills a fresh skip: a late tick)
        names = self.names[sym]
        ts = self.clock + np.arange(n, dtype=np.int64) * 100
        self.clock = int(ts[-1]) + 100
        ids = [message_id(self.kind, "SIM", s, self.session, int(q)) for s, q in zip(names, seq, strict=True)]
        offsets = np.arange(self.offset, self.offset + n, dtype=np.int64)
        self.offset += n
        return pl.DataFrame(
            {
                "message_id": ids,
                "exchange": ["SIM"] * n,
                "symbol": names.tolist(),
                "session": pl.Series([self.session], dtype=pl.Date).extend_constant(self.session, n - 1),
                "sequence": seq,
                "exchange_ts": pl.Series(ts).cast(pl.Datetime("us", "UTC")),
                "_partition": pl.Series(np.zeros(n, dtype=np.int32)),
                "_offset": offsets,
            }
        )

    def _swap(self, sym: np.ndarray, seq: np.ndarray) -> None:
        """Swap a few ticks with the next tick of the same symbol: a small reorder."""
        picks = np.flatnonzero(self.rng.random(len(sym)) < self.fault_rate)
        for i in picks:
            later = np.flatnonzero(sym[i + 1 : i + 200] == sym[i])
            if later.size:
                j = i + 1 + int(later[0])
                seq[i], seq[j] = seq[j], seq[i]
