"""Message ids as 16-byte keys, the form both dedup tiers use.

An id is 32 hex digits (``k2.schemas.ids``). The exact stores key on its 16 bytes and the Bloom
filter takes its bit positions from them, converted for a whole batch at once: Arrow's string buffer
is contiguous, so one ``bytes.fromhex`` over it replaces a Python call per id (~50 M ids/s instead
of ~4 M).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from k2.schemas.binary import string_buffers

__all__ = ["ID_DTYPE", "Ids", "id_bytes", "id_hex"]

#: One id as a fixed 16-byte numpy string: sorts and compares like ``bytes`` (memcmp).
ID_DTYPE = np.dtype("S16")

Ids = Sequence[str] | pl.Series | np.ndarray
"""Message ids as the stores accept them: a list of hex strings, a polars String series, or their
16-byte keys already (an ``ID_DTYPE`` array, as :func:`id_bytes` returns them)."""


def id_bytes(ids: Ids) -> np.ndarray:
    """The 16-byte keys of 32-hex-digit ids, as an ``ID_DTYPE`` array in input order.

    Raises:
        ValueError: an id is null, not 32 characters long, or not hexadecimal.
    """
    n = len(ids)
    if isinstance(ids, np.ndarray) and ids.dtype == ID_DTYPE:
        return ids  # converted already (the dedup's commit hands its keys on to the store)
    if n == 0:
        return np.empty(0, dtype=ID_DTYPE)
    if isinstance(ids, pl.Series):
        text = _arrow_text(ids)
    else:
        if set(map(len, ids)) != {32}:
            raise ValueError("message ids must be 32 hex digits")
        text = "".join(ids)
    raw = bytes.fromhex(text)  # raises ValueError on a non-hex character
    if len(raw) != 16 * n:  # fromhex skips whitespace: a padded id would shift every later one
        raise ValueError("message ids must be 32 hex digits")
    return np.frombuffer(raw, dtype=ID_DTYPE)


def id_hex(keys: np.ndarray) -> list[str]:
    """Inverse of :func:`id_bytes`: lower-case hex strings."""
    raw = keys.astype(ID_DTYPE, copy=False).tobytes().hex()
    return [raw[i : i + 32] for i in range(0, len(raw), 32)]


def _arrow_text(ids: pl.Series) -> str:
    """The series' characters, concatenated, checked to be 32 per id."""
    if ids.null_count():
        raise ValueError("message ids must not be null")
    offsets, data = string_buffers(ids.cast(pl.String))
    if not (np.diff(offsets) == 32).all():
        raise ValueError("message ids must be 32 hex digits")
    return data[int(offsets[0]) : int(offsets[-1])].tobytes().decode("ascii")
