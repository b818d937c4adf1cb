"""Quotes from the price file: a region's own figure, or us-east-1 x uplift marked as an estimate."""

from __future__ import annotations

import pytest

from k2.cost.errors import PriceError
from k2.cost.prices import REGIONS, PriceBook, load_prices


def test_quote_own_figure_and_estimate(prices: PriceBook) -> None:
    own = prices.quote("transfer.internet_out", "ap-southeast-2")
    assert (own.value, own.estimate) == (0.12, False)
    est = prices.quote("s3.standard", "ap-southeast-2")
    assert (est.value, est.estimate, est.uplift) == (pytest.approx(0.025), True, 1.25)
    assert prices.quote("s3.standard", "us-east-1").estimate is False


def test_missing_item_names_it(prices: PriceBook) -> None:
    with pytest.raises(PriceError, match="nope"):
        prices.quote("nope", "us-east-1")


def test_shipped_file_prices_every_item_in_both_regions() -> None:
    book = load_prices()
    assert book.as_of == "2026-12-06"
    for name in book.names():
        for region in REGIONS:
            quote = book.quote(name, region)
            assert quote.value > 0 and quote.source
