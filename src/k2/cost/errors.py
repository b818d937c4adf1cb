"""Errors of the cost model: a bad input (exit 2) or a missing measurement or price (exit 1)."""

from __future__ import annotations

from k2.errors import K2Error

__all__ = ["CostInputError", "MeasuredFigureError", "PriceError"]


class CostInputError(K2Error):
    """An input to the model is out of range or malformed; the message names it."""

    exit_code = 2

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name


class MeasuredFigureError(K2Error):
    """A figure the model sizes from is missing from the benchmark results."""

    def __init__(self, benchmark: str, figure: str, where: str) -> None:
        super().__init__(
            f"{benchmark}.{figure} is missing from {where}: run `python -m benchmarks.{benchmark}` "
            "or point --measured at a results directory that has it"
        )
        self.benchmark = benchmark
        self.figure = figure


class PriceError(K2Error):
    """The price file lacks an item or a region, or cannot be read."""

    def __init__(self, item: str, message: str) -> None:
        super().__init__(f"price {item}: {message}")
        self.item = item
