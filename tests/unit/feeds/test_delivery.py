"""Delivery batches: interleaving and slicing never change any kind's order."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from k2.feeds.delivery import QUOTE, RAW, TRADE, Delivery, RawMessage
from k2.feeds.frames import decimal_from_micros


def _delivery() -> Delivery:
    trades = pl.DataFrame({"n": [0, 1, 2, 3]})
    quotes = pl.DataFrame({"n": [10, 11, 12]})
    raw = [RawMessage("trades", b"A", b"x", "random_bytes"), RawMessage("quotes", b"B", b"y", "truncated")]
    order = Delivery.interleave(
        np.array([[1], [4], [5], [9]]), np.array([[2], [3], [8]]), np.array([[6], [7]])
    )
    return Delivery(trades, quotes, raw, order)


def test_interleave_merges_by_key() -> None:
    assert _delivery().order.tolist() == [TRADE, QUOTE, QUOTE, TRADE, TRADE, RAW, RAW, QUOTE, TRADE]


@pytest.mark.parametrize("size", [1, 2, 4, 100])
def test_split_keeps_the_order(size: int) -> None:
    whole = _delivery()
    parts = list(whole.split(size))
    assert all(len(p) <= size for p in parts)
    assert np.concatenate([p.order for p in parts]).tolist() == whole.order.tolist()
    assert pl.concat([p.trades for p in parts])["n"].to_list() == [0, 1, 2, 3]
    assert pl.concat([p.quotes for p in parts])["n"].to_list() == [10, 11, 12]
    assert [m.value for p in parts for m in p.raw] == [b"x", b"y"]


def test_split_at_cuts_where_asked() -> None:
    parts = list(_delivery().split_at([3, 6]))
    assert [len(p) for p in parts] == [3, 3, 3]
    assert parts[1].trades["n"].to_list() == [1, 2] and [m.value for m in parts[1].raw] == [b"x"]


def test_order_must_match_the_frames() -> None:
    with pytest.raises(ValueError, match="order"):
        Delivery(pl.DataFrame({"n": [1]}), pl.DataFrame({"n": []}), [], np.zeros(0, dtype=np.int8))


def test_decimals_from_micros_are_exact() -> None:
    series = decimal_from_micros("p", np.array([36_667_000, -5, 1, 10**17]))
    assert series.dtype == pl.Decimal(18, 6)
    assert [str(v) for v in series.to_list()] == ["36.667000", "-0.000005", "0.000001", "100000000000.000000"]
