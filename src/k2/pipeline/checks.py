"""The hook where sequence checks and dedup run on each decoded, validated batch.

The pipeline knows nothing of how verdicts are made; it needs four things from the hook: where it
must start reading each partition (its own watermark), a verdict per batch, a place in the commit
order, and a way to forget uncommitted work when partitions move.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from k2.types import Offsets, TopicPartition

__all__ = ["BatchChecks", "CheckResult", "NoChecks"]


@dataclass(frozen=True)
class CheckResult:
    keep: pl.Series  # Boolean: rows to write (duplicates are False)
    gap_events: pl.DataFrame | None = None  # rows for the sequence_gaps table (with kafka lineage)


class BatchChecks(abc.ABC):
    @abc.abstractmethod
    def assign(self, partitions: list[TopicPartition]) -> Offsets:
        """Load state for newly owned partitions; return the offset each must be replayed from."""

    @abc.abstractmethod
    def process(self, kind: str, topic: str, frame: pl.DataFrame) -> CheckResult:
        """Classify a batch (with _partition/_offset columns) against the state; write nothing yet."""

    @abc.abstractmethod
    def prepare(self, end: Offsets) -> Callable[[], None]:
        """Freeze the state the batches since the last checkpoint produced; return its commit.

        The returned function persists exactly that state, fenced by ``end``; the pipeline calls it
        after every table committed (so the state never runs ahead of Iceberg), possibly on another
        thread while the next batches are already being classified.
        """

    @abc.abstractmethod
    def revoke(self, partitions: list[TopicPartition]) -> None:
        """Forget uncommitted state for partitions that moved to another consumer."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Called once after a clean stop's final commit (not after a failure)."""

    def expire(self) -> dict[str, pl.DataFrame]:
        """Gap events (per topic) that wall time alone produced on partitions that went quiet.

        Called by the runner between batches when nothing is in process; what it changed is frozen
        with the next checkpoint like a batch's work. Optional: by default nothing expires.
        """
        return {}


class NoChecks(BatchChecks):
    """Every row is written; no state. For feeds that need no sequence checks or dedup."""

    def assign(self, partitions: list[TopicPartition]) -> Offsets:
        return {}

    def process(self, kind: str, topic: str, frame: pl.DataFrame) -> CheckResult:
        return CheckResult(keep=pl.Series("keep", [True] * frame.height, dtype=pl.Boolean))

    def prepare(self, end: Offsets) -> Callable[[], None]:
        return lambda: None

    def revoke(self, partitions: list[TopicPartition]) -> None:
        return None
