"""A time-windowed Bloom filter: ``generations`` bit arrays, each covering window / generations.

Memory, derived (C = ``bloom_capacity``, ids expected per window; G = ``dedup_generations``;
p = ``bloom_error_rate``, the false-positive rate of one generation):

* one generation holds the ids of one span, n_g = C / G, in the optimal m_g = n_g * (-ln p) / (ln 2)^2
  = n_g * 1.44 * log2(1/p) bits (rounded up to whole bytes) with k = round(log2(1/p)) bit positions;
* all G together: M = G * m_g = C * 1.44 * log2(1/p) bits, independent of G:
  **bytes per windowed id = 1.44 * log2(1/p) / 8** = 1.80 B at p = 0.1 % (18 MB, 17.1 MiB for C = 10 M);
  2.40 B at p = 0.01 %.
* a new id is a false positive if any live generation claims it: 1 - (1 - p)^G, about G * p when every
  generation is full (0.4 % for G = 4, p = 0.1 %), less while the newest one fills. A positive costs
  one exact-store lookup and never drops a tick.
* horizon: an id is remembered from insertion until its generation is dropped, between
  (G - 1) / G of the window and the whole window (18 to 24 h for the defaults). For a guaranteed
  horizon H, configure window = H * G / (G - 1).

Why our own filter rather than a library (rbloom before): rbloom has no batch lookup, so a check cost
one Python call per id per live generation plus an ``int(id, 16)`` per id. Message ids are BLAKE2b-128
digests, uniformly random already, so no hashing is needed: the k positions come from the id's two
64-bit halves by Kirsch-Mitzenmacher double hashing, g_i = h1 + i * h2 (mod 2^64, h2 odd), mapped to
[0, m) by multiply-shift of the top 32 bits (``g % m`` above 2^32 bits). Add and lookup are then
whole-array NumPy operations: the first positions once per batch for every generation,
``np.bitwise_or.at`` to set bits, gathers to test them, and position i computed and tested only for
the ids that passed positions < i.
A cache-line-blocked layout was not used: NumPy still does one gather per position, so it would
save little, and at ~14 bits per key a 512-bit block raises the false-positive rate above p.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from k2.state.ids import ID_DTYPE, Ids, id_bytes

__all__ = ["LAYOUT", "WindowedBloom", "bits_per_key"]

#: The bit layout written by :meth:`WindowedBloom.save`; a file without it is refused (rebuild).
LAYOUT = "k2-numpy-bloom/1 km64-mulshift32"
_LEN = struct.Struct("<Q")
_CHUNK = 1 << 16  # ids per vectorised step: bounds the (k, n) temporaries to ~11 MB
_U32 = np.uint64(32)
_FIRST = 3  # positions tested for every id at once (measured fastest of 1-4 and k)


def bits_per_key(error_rate: float) -> float:
    """Optimal Bloom bits per stored key at a false-positive rate: -ln p / (ln 2)^2."""
    return -math.log(error_rate) / (math.log(2) ** 2)


def _keys(ids: np.ndarray | Ids) -> np.ndarray:
    """16-byte keys as a contiguous ``ID_DTYPE`` array (hex ids are converted)."""
    if isinstance(ids, np.ndarray):
        return np.ascontiguousarray(ids.astype(ID_DTYPE, copy=False))
    return id_bytes(ids)


class WindowedBloom:
    """Generation-indexed bit arrays; generation g covers time [g * span, (g + 1) * span).

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
        self.k = max(1, round(-math.log2(error_rate)))
        self.generation_nbytes = max(8, math.ceil(self.per_generation * bits_per_key(error_rate) / 8))
        self.m = 8 * self.generation_nbytes
        self.filters: dict[int, np.ndarray] = {}  # generation -> its bits, uint8, made on first add
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

    def _positions(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Byte index (intp) and bit mask (uint8) of each key's k positions, shaped (k, n)."""
        halves = keys.view(np.uint64).reshape(-1, 2)
        return self._place(
            halves[:, 0], halves[:, 1] | np.uint64(1), np.arange(self.k, dtype=np.uint64)[:, None]
        )

    def _place(
        self, h1: np.ndarray, h2: np.ndarray, i: np.ndarray | np.uint64
    ) -> tuple[np.ndarray, np.ndarray]:
        """Byte index and bit mask of positions ``i`` (an index, or a column of them) of keys (h1, h2)."""
        g = h1 + i * h2  # wraps mod 2^64, as intended
        if self.m <= 1 << 32:
            g >>= _U32
            g *= np.uint64(self.m)
            g >>= _U32
        else:
            g %= np.uint64(self.m)
        return (g >> np.uint64(3)).astype(np.intp), np.left_shift(1, g & np.uint64(7)).astype(np.uint8)

    def add(self, generation: int, ids: np.ndarray | Ids) -> None:
        """Add 16-byte keys (or hex ids) to a generation (ignored if it already left the window)."""
        if self.current is not None and generation < self.current - self.generations + 1:
            return
        if self.current is None or generation > self.current:
            self.rotate(generation)
        bits = self.filters.get(generation)
        if bits is None:
            bits = self.filters[generation] = np.zeros(self.generation_nbytes, dtype=np.uint8)
        keys = _keys(ids)
        for a in range(0, keys.size, _CHUNK):
            idx, mask = self._positions(keys[a : a + _CHUNK])
            np.bitwise_or.at(bits, idx.ravel(), mask.ravel())

    def contains(self, ids: np.ndarray | Ids) -> np.ndarray:
        """Boolean array: may the id have been added to any live generation?"""
        out = np.zeros(len(ids), dtype=bool)
        for claimed in self.claims(ids).values():
            out |= claimed
        return out

    def claims(self, ids: np.ndarray | Ids) -> dict[int, np.ndarray]:
        """Per generation that has bits: may the id have been added to it (boolean array)?

        Positions are computed once for all generations. Each generation tests the first
        ``_FIRST`` positions of every id in one gather, then position i only for the ids whose
        earlier positions were all set: about half of the non-members drop out per position.
        """
        keys = _keys(ids)
        out = {g: np.zeros(keys.size, dtype=bool) for g in self.filters}
        first = min(_FIRST, self.k)
        head_i = np.arange(first, dtype=np.uint64)[:, None]
        for a in range(0, keys.size, _CHUNK):
            halves = keys[a : a + _CHUNK].view(np.uint64).reshape(-1, 2)
            h1, h2 = halves[:, 0], halves[:, 1] | np.uint64(1)
            idx, mask = self._place(h1, h2, head_i)  # later positions only for the ids still alive
            for g, bits in self.filters.items():
                head = np.take(bits, idx.ravel()).reshape(first, -1)
                head &= mask
                alive = np.flatnonzero(np.minimum.reduce(head, axis=0))
                for i in range(first, self.k):
                    if not alive.size:
                        break
                    at, bit = self._place(h1[alive], h2[alive], np.uint64(i))
                    alive = alive[(np.take(bits, at) & bit) != 0]
                out[g][a + alive] = True
        return out

    @property
    def nbytes(self) -> int:
        """Bytes of filter bits allocated now."""
        return sum(f.nbytes for f in self.filters.values())

    def full_nbytes(self) -> int:
        """Bytes once every live generation exists: the figure the formula predicts."""
        return self.generation_nbytes * self.generations

    def save(self, path: Path, meta: dict[str, Any]) -> None:
        """Write every generation's bits plus ``meta`` (JSON) to path, atomically (temp file + rename)."""
        header = {
            **meta,
            "bloom": LAYOUT,
            "capacity": self.capacity,
            "error_rate": self.error_rate,
            "generations": self.generations,
            "k": self.k,
            "m": self.m,
            "current": self.current,
            "filters": [[g, int(f.nbytes)] for g, f in sorted(self.filters.items())],
        }
        head = json.dumps(header).encode()
        tmp = path.with_name(path.name + ".tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as out:
            out.write(_LEN.pack(len(head)))
            out.write(head)
            for _, f in sorted(self.filters.items()):
                out.write(f.tobytes())
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)

    @classmethod
    def read(cls, path: Path) -> tuple[WindowedBloom, dict[str, Any]]:
        """Inverse of :meth:`save`: the filter and the saved header.

        Raises:
            ValueError: the file is truncated, of another layout (an rbloom file), or not a saved filter.
            OSError: it cannot be read.
        """
        data = path.read_bytes()
        try:  # a crash mid-write elsewhere, a full disk: any prefix of a file must read as "unusable"
            (size,) = _LEN.unpack_from(data)
            header = json.loads(data[_LEN.size : _LEN.size + size])
        except (struct.error, ValueError) as exc:
            raise ValueError(f"{path} is truncated or not a saved filter") from exc
        if not isinstance(header, dict) or not isinstance(header.get("filters"), list):
            raise ValueError(f"{path} is truncated or not a saved filter")
        if header.get("bloom") != LAYOUT:
            raise ValueError(f"{path} has another bit layout ({header.get('bloom') or 'rbloom'})")
        bloom = cls(
            capacity=header["capacity"], error_rate=header["error_rate"], generations=header["generations"]
        )
        if (header["k"], header["m"]) != (bloom.k, bloom.m):
            raise ValueError(f"{path} was written with other filter parameters")
        bloom.current = header["current"]
        off = _LEN.size + size
        for g, n in header["filters"]:
            if n != bloom.generation_nbytes or off + n > len(data):
                raise ValueError(f"{path} is truncated or inconsistent")
            bloom.filters[int(g)] = np.frombuffer(data, dtype=np.uint8, count=n, offset=off).copy()
            off += n
        if off != len(data):
            raise ValueError(f"{path} has trailing bytes")
        return bloom, header
