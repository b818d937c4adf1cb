"""A time-windowed Bloom filter: ``generations`` rbloom filters, each covering window / generations.

Memory, derived (C = ``bloom_capacity``, ids expected per window; G = ``dedup_generations``;
p = ``bloom_error_rate``, the false-positive rate of one generation):

* one generation holds the ids of one span, n_g = C / G, in the optimal m_g = n_g * (-ln p) / (ln 2)^2
  = n_g * 1.44 * log2(1/p) bits with k = log2(1/p) hash functions;
* all G together: M = G * m_g = C * 1.44 * log2(1/p) bits, independent of G:
  **bytes per windowed id = 1.44 * log2(1/p) / 8** = 1.80 B at p = 0.1 % (18 MB, 17.1 MiB for C = 10 M);
  2.40 B at p = 0.01 %.
* a new id is a false positive if any live generation claims it: 1 - (1 - p)^G, about G * p when every
  generation is full (0.4 % for G = 4, p = 0.1 %), less while the newest one fills. A positive costs
  one exact-store lookup and never drops a tick.
* horizon: an id is remembered from insertion until its generation is dropped, between
  (G - 1) / G of the window and the whole window (18 to 24 h for the defaults). For a guaranteed
  horizon H, configure window = H * G / (G - 1).

Hashes: message ids are already uniform 128-bit hashes (blake2b), so the hash of an id is its own value
shifted into rbloom's signed 128-bit range; computed once per batch and handed to rbloom with
``hash_func=int`` (identity on ints), which keeps the filter saveable and ~2x faster than parsing
inside the callback.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rbloom import Bloom

from k2.state.ids import id_hashes

__all__ = ["WindowedBloom", "bits_per_key", "id_hashes"]

_LEN = struct.Struct("<Q")


def bits_per_key(error_rate: float) -> float:
    """Optimal Bloom bits per stored key at a false-positive rate: -ln p / (ln 2)^2."""
    return -math.log(error_rate) / (math.log(2) ** 2)


class WindowedBloom:
    """Generation-indexed filters; generation g covers time [g * span, (g + 1) * span).

    Args:
        capacity: ids expected per window (all generations together).
        error_rate: false-positive rate of one generation.
        generations: how many generations are live at once.
    """

    def __init__(self, *, capacity: int, error_rate: float, generations: int) -> None:
        if generations < 1:
            raise ValueError("generations must be >= 1")
        self.capacity = capacity
        self.error_rate = error_rate
        self.generations = generations
        self.per_generation = max(1, math.ceil(capacity / generations))
        self.filters: dict[int, Bloom] = {}
        self.current: int | None = None

    @property
    def oldest_live(self) -> int | None:
        return None if self.current is None else self.current - self.generations + 1

    def live(self) -> list[int]:
        """Live generation indices, oldest first (the newest may not exist yet: made on first add)."""
        if self.current is None:
            return []
        return list(range(self.current - self.generations + 1, self.current + 1))

    def rotate(self, generation: int) -> list[int]:
        """Make ``generation`` the newest; returns the generations dropped (older than the window)."""
        if self.current is not None and generation <= self.current:
            return []
        self.current = generation
        floor = generation - self.generations + 1
        dropped = sorted(g for g in self.filters if g < floor)
        for g in dropped:
            del self.filters[g]
        return dropped

    def add(self, generation: int, hashes: Sequence[int]) -> None:
        """Add to a generation (ignored if it already left the window)."""
        if self.current is not None and generation < self.current - self.generations + 1:
            return
        f = self.filters.get(generation)
        if f is None:
            f = self.filters[generation] = Bloom(self.per_generation, self.error_rate, int)
        f.update(hashes)

    def contains(self, hashes: Sequence[int]) -> np.ndarray:
        """Boolean array: may the id have been added to any live generation?"""
        out = np.zeros(len(hashes), dtype=bool)
        for claimed in self.claims(hashes).values():
            out |= claimed
        return out

    def claims(self, hashes: Sequence[int]) -> dict[int, np.ndarray]:
        """Per generation that has a filter: may the id have been added to it (boolean array)?"""
        return {
            g: np.fromiter(map(f.__contains__, hashes), dtype=bool, count=len(hashes))
            for g, f in self.filters.items()
        }

    @property
    def nbytes(self) -> int:
        """Bytes of filter bits allocated now."""
        return sum(f.size_in_bits for f in self.filters.values()) // 8

    def full_nbytes(self) -> int:
        """Bytes once every live generation exists: the figure the formula predicts."""
        probe = Bloom(self.per_generation, self.error_rate, int)
        return probe.size_in_bits * self.generations // 8

    def save(self, path: Path, meta: dict[str, Any]) -> None:
        """Write every filter plus ``meta`` (JSON) to path, atomically (temp file + rename)."""
        blobs = {g: f.save_bytes() for g, f in sorted(self.filters.items())}
        header = {
            **meta,
            "capacity": self.capacity,
            "error_rate": self.error_rate,
            "generations": self.generations,
            "current": self.current,
            "filters": [[g, len(b)] for g, b in blobs.items()],
        }
        head = json.dumps(header).encode()
        tmp = path.with_name(path.name + ".tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as out:
            out.write(_LEN.pack(len(head)))
            out.write(head)
            for b in blobs.values():
                out.write(b)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: Path) -> tuple[WindowedBloom, dict[str, Any]]:
        """Inverse of :meth:`save`: the filter and the saved header.

        Raises:
            ValueError: the file is truncated or not a saved filter.
            OSError: it cannot be read.
        """
        data = path.read_bytes()
        (size,) = _LEN.unpack_from(data)
        header = json.loads(data[_LEN.size : _LEN.size + size])
        bloom = cls(
            capacity=header["capacity"], error_rate=header["error_rate"], generations=header["generations"]
        )
        bloom.current = header["current"]
        off = _LEN.size + size
        for g, n in header["filters"]:
            if off + n > len(data):
                raise ValueError(f"{path} is truncated")
            bloom.filters[int(g)] = Bloom.load_bytes(data[off : off + n], int)
            off += n
        return bloom, header
