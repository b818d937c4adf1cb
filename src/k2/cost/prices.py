"""Prices from a dated data file shipped with K2, each with its source and whether it was re-checked.

A region without its own figure is estimated from us-east-1 times the file's uplift for that region,
and the quote says so: a bill never mixes estimates and list prices without marking which is which.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from k2.cost.errors import PriceError

__all__ = ["DEFAULT_PRICES", "REGIONS", "PriceBook", "Quote", "Region", "load_prices"]

Region = Literal["ap-southeast-2", "us-east-1"]
REGIONS: tuple[Region, ...] = ("ap-southeast-2", "us-east-1")
DEFAULT_PRICES = "prices-2026-12-06.json"
_BASE: Region = "us-east-1"


@dataclass(frozen=True)
class Quote:
    """One unit price in one region; ``estimate`` when derived from us-east-1 with ``uplift``."""

    item: str
    value: float
    unit: str
    region: str
    estimate: bool
    uplift: float
    checked: bool
    source: str


class PriceBook:
    """The items of one price file, quoted per region."""

    def __init__(self, document: dict[str, Any], origin: str) -> None:
        self.as_of: str = document.get("as_of", "?")
        self.origin = origin
        self._items: dict[str, dict[str, Any]] = document.get("items", {})
        self._uplift: dict[str, dict[str, Any]] = document.get("uplift", {})

    def names(self) -> list[str]:
        """Every priced item, in file order."""
        return list(self._items)

    def item(self, name: str) -> dict[str, Any]:
        """The raw entry of an item (unit, sizes, source).

        Raises:
            PriceError: the file has no such item.
        """
        try:
            return self._items[name]
        except KeyError:
            raise PriceError(name, f"not in {self.origin}") from None

    def uplift(self, region: str) -> float:
        """The factor applied to a us-east-1 price where ``region`` has none of its own.

        Raises:
            PriceError: the file gives no uplift for the region.
        """
        try:
            return float(self._uplift[region]["factor"])
        except (KeyError, TypeError, ValueError):
            raise PriceError(f"uplift.{region}", f"no uplift for {region} in {self.origin}") from None

    def quote(self, name: str, region: str) -> Quote:
        """The unit price of ``name`` in ``region``.

        Raises:
            PriceError: the item is missing, or neither the region nor us-east-1 has a figure.
        """
        entry = self.item(name)
        own = entry.get(region)
        common = {"item": name, "unit": entry.get("unit", ""), "region": region,
                  "checked": bool(entry.get("checked")), "source": entry.get("source", "")}  # fmt: skip
        if own is not None:
            return Quote(value=float(own), estimate=False, uplift=1.0, **common)
        base = entry.get(_BASE)
        if base is None:
            raise PriceError(name, f"no {region} or {_BASE} figure in {self.origin}")
        factor = self.uplift(region)
        return Quote(value=float(base) * factor, estimate=region != _BASE, uplift=factor, **common)


def load_prices(path: Path | None = None) -> PriceBook:
    """The shipped price file, or ``path``.

    Raises:
        PriceError: the file cannot be read or is not JSON.
    """
    try:
        if path is None:
            text = resources.files("k2.cost").joinpath("data", DEFAULT_PRICES).read_text()
            origin = f"k2/cost/data/{DEFAULT_PRICES}"
        else:
            text, origin = Path(path).read_text(), str(path)
        return PriceBook(json.loads(text), origin)
    except (OSError, json.JSONDecodeError) as exc:
        raise PriceError(str(path or DEFAULT_PRICES), f"cannot be read: {exc}") from exc
