"""Message id conversions: the vectorised 16-byte keys both dedup tiers use."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from k2.state.ids import id_bytes, id_hex


def _ids(n: int, seed: int) -> list[str]:
    raw = np.random.default_rng(seed).bytes(16 * n).hex()
    return [raw[i : i + 32] for i in range(0, 32 * n, 32)]


def test_bytes_from_a_series_and_a_list_agree_with_fromhex() -> None:
    ids = _ids(500, seed=2)
    series = pl.concat([pl.Series(ids[:200]), pl.Series(ids[200:])], rechunk=False)
    expected = b"".join(bytes.fromhex(i) for i in ids)
    assert id_bytes(series).tobytes() == expected
    assert id_bytes(series.slice(100, 50)).tobytes() == expected[1600:2400]  # sliced: offset buffer
    assert id_bytes(ids).tobytes() == expected
    assert id_bytes(pl.Series([i.upper() for i in ids])).tobytes() == expected
    assert id_hex(id_bytes(ids)) == ids
    assert id_bytes([]).size == 0


@pytest.mark.parametrize("bad", [["a" * 31], ["a" * 33], ["g" * 32], ["a" * 30 + " a"], ["é" * 32]], ids=str)
def test_malformed_ids_are_refused(bad: list[str]) -> None:
    with pytest.raises(ValueError):
        id_bytes(bad)
    with pytest.raises(ValueError):
        id_bytes(pl.Series(bad))


def test_null_ids_are_refused() -> None:
    with pytest.raises(ValueError):
        id_bytes(pl.Series(["a" * 32, None]))
