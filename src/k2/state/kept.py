"""Ids a checkpoint kept and the exact store does not hold yet, asked of every later batch.

The pipeline keeps ids in memory from the batch that judged them new until their checkpoint's state
commit returns: a duplicate arriving meanwhile must find them here, since neither dedup tier has
them. A Python set of hex strings cost a string per id and a hash probe per id per layer, about a
quarter of the process thread's time with dedup on (py-spy, issue #17). Here a batch costs one
vectorised probe of a one-word-per-key Bloom filter; only the ids it claims (true repeats plus a
fraction of a percent of the rest) are confirmed exactly, by binary search in the kept keys, held
as a few sorted runs. A claim never drops a tick without that confirmation.

Why this filter and not :class:`k2.state.bloom.WindowedBloom`: that one spreads an id's k bits over
the whole array for the lowest memory per id, which costs k gathers per id; here every bit of an id
is in one 64-bit word (a "blocked" Bloom filter, Putze et al. 2007), one gather per id, at the price
of more bits per id for the same false-positive rate, which a checkpoint-sized filter can afford.
"""

from __future__ import annotations

import numpy as np

from k2.state.ids import ID_DTYPE

__all__ = ["KeptIds"]

#: Ids one filter is sized for (32 bits each, 2 MB; a checkpoint holds at most `lake.commit_rows`,
#: 200,000 by default); a longer one only raises the false-positive rate, which costs binary
#: searches in memory, never a verdict.
CAPACITY = 500_000
_BITS_PER_ID = 32
_K = 6  # bits per id, 6 bits of the id's second half each
_SIX = np.uint64(63)
_RUNS = 8  # sorted runs held before they are merged into one


def _masks(tails: np.ndarray) -> np.ndarray:
    """Each id's k bits within its word, from its second 8 bytes (ids are uniform digests)."""
    mask: np.ndarray = np.left_shift(np.uint64(1), tails & _SIX)
    for i in range(1, _K):
        mask |= np.left_shift(np.uint64(1), (tails >> np.uint64(6 * i)) & _SIX)
    return mask


class KeptIds:
    """One checkpoint's kept ids of one topic: add batches, ask whether ids are among them."""

    __slots__ = ("_runs", "_shift", "_words", "size")

    def __init__(self, capacity: int = CAPACITY) -> None:
        nwords = 1 << max(6, int(np.ceil(np.log2(max(1, capacity) * _BITS_PER_ID / 64))))
        self._words = np.zeros(nwords, dtype=np.uint64)
        self._shift = np.uint64(64 - int(np.log2(nwords)))
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []  # (sorted first halves, second halves alike)
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def _probe(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        halves = keys.view(np.uint64).reshape(-1, 2)
        heads = halves[:, 0]
        return heads, (heads >> self._shift).astype(np.intp), _masks(halves[:, 1])

    def add(self, keys: np.ndarray) -> None:
        """Remember 16-byte keys (``ID_DTYPE``), distinct from each other and from those held."""
        if not keys.size:
            return
        keys = np.ascontiguousarray(keys.astype(ID_DTYPE, copy=False))
        heads, words, masks = self._probe(keys)
        np.bitwise_or.at(self._words, words, masks)
        order = np.argsort(heads)
        self._runs.append((heads[order], keys.view(np.uint64)[1::2][order]))
        self.size += keys.size
        if len(self._runs) > _RUNS:  # searched only for claimed ids, so a few runs cost little
            h, t = np.concatenate([r[0] for r in self._runs]), np.concatenate([r[1] for r in self._runs])
            order = np.argsort(h)
            self._runs = [(h[order], t[order])]

    def contains(self, keys: np.ndarray) -> np.ndarray:
        """Boolean array: is each key held (exactly)?"""
        out = np.zeros(keys.size, dtype=bool)
        if not self.size or not keys.size:
            return out
        keys = np.ascontiguousarray(keys.astype(ID_DTYPE, copy=False))
        heads, words, masks = self._probe(keys)
        ask = np.flatnonzero((self._words[words] & masks) == masks)
        if not ask.size:
            return out
        heads, tails = heads[ask], keys.view(np.uint64)[1::2][ask]
        for sorted_heads, run_tails in self._runs:
            at = np.minimum(np.searchsorted(sorted_heads, heads), sorted_heads.size - 1)
            same = sorted_heads[at] == heads
            out[ask[same & (run_tails[at] == tails)]] = True
            # two kept ids sharing their first 8 bytes (~n^2 / 2^65 pairs): look past the first
            for i in np.flatnonzero(same & (run_tails[at] != tails)).tolist():
                j = int(at[i]) + 1
                while j < sorted_heads.size and sorted_heads[j] == heads[i]:
                    if run_tails[j] == tails[i]:
                        out[ask[i]] = True
                        break
                    j += 1
        return out
