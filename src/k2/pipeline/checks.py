"""The hook where sequence checks and dedup run on each decoded, validated batch.

The pipeline knows nothing of how verdicts are made; it needs four things from the hook: where it
must start reading each partition (its own watermark), a verdict per batch, a place in the commit
order, and a way to forget uncommitted work when partitions move. ``BatchChecks`` is a protocol, so
the implementation (``k2.state.StateChecks``, built from Settings by ``sequencing.py``) need not
import the pipeline: the dependency runs one way, pipeline to state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import polars as pl

from k2.state import CheckResult
from k2.types import Offsets, TopicPartition

__all__ = ["BatchChecks", "NoChecks"]


class BatchChecks(Protocol):
    """What the runner, the batch and the checkpoint call on the checks."""

    def assign(self, partitions: list[TopicPartition]) -> Offsets:
        """Load state for newly owned partitions; return the offset each must be replayed from."""
        ...

    def process(self, kind: str, topic: str, frame: pl.DataFrame) -> CheckResult:
        """Classify a batch (with _partition/_offset columns) against the state; write nothing yet."""
        ...

    def prepare(self, end: Offsets) -> Callable[[], None]:
        """Freeze the state the batches since the last checkpoint produced; return its commit.

        The returned function persists exactly that state, fenced by ``end``; the pipeline calls it
        after every table committed (so the state never runs ahead of Iceberg), possibly on another
        thread while the next batches are already being classified.
        """
        ...

    def revoke(self, partitions: list[TopicPartition]) -> None:
        """Forget uncommitted state for partitions that moved to another consumer."""
        ...

    def close(self) -> None:
        """Called once after a clean stop's final commit (not after a failure)."""
        return None

    def expire(self) -> dict[str, pl.DataFrame]:
        """Gap events (per topic) that wall time alone produced on partitions that went quiet.

        Called by the runner between batches when nothing is in process; what it changed is frozen
        with the next checkpoint like a batch's work. By default nothing expires.
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
