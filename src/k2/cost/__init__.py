"""A cost model for running K2 on AWS, sized from K2's own benchmark results (``k2 cost``)."""

from __future__ import annotations

from k2.cost.inputs import SCENARIOS, Workload
from k2.cost.measured import Measured, load_measured
from k2.cost.model import Bill, estimate
from k2.cost.prices import PriceBook, load_prices

__all__ = [
    "SCENARIOS",
    "Bill",
    "Measured",
    "PriceBook",
    "Workload",
    "estimate",
    "load_measured",
    "load_prices",
]
