"""The hook where sequence checks and dedup run on each decoded, validated batch.

The pipeline knows nothing of how verdicts are made; it needs four things from the hook: where it
must start reading each partition (its own watermark), a verdict per batch, a place in the commit
order, and a way to forget uncommitted work when partitions move. ``BatchChecks`` is a protocol, so
the implementation (``k2.state.StateChecks``, built from Settings by ``sequencing.py``) need not
import the pipeline: the dependency runs one way, pipeline to state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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

    def process(
        self, kind: str, topic: str, frame: pl.DataFrame, markers: Sequence[tuple[int, int, int | None]] = ()
    ) -> CheckResult:
        """Classify a batch (with _partition/_offset columns) against the state; write nothing yet.

        ``markers``: (partition, offset, clock) of the expire markers read with it
        (``k2.stream.control``).
        """
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

    def quiet(self, kinds: Mapping[str, str] | None = None) -> list[tuple[TopicPartition, int]]:
        """(partition, exchange clock) of the partitions quiet for the wall-clock timeout with young
        holes: the runner appends an expire marker to each (``k2.stream.control``). By default none."""
        return []

    def requiet(self, tp: TopicPartition) -> None:
        """Name ``tp`` again at the next :meth:`quiet` (its marker could not be sent)."""
        return None


class NoChecks(BatchChecks):
    """Every row is written; no state. For feeds that need no sequence checks or dedup."""

    def assign(self, partitions: list[TopicPartition]) -> Offsets:
        return {}

    def process(
        self, kind: str, topic: str, frame: pl.DataFrame, markers: Sequence[tuple[int, int, int | None]] = ()
    ) -> CheckResult:
        return CheckResult(keep=pl.Series("keep", [True] * frame.height, dtype=pl.Boolean))

    def prepare(self, end: Offsets) -> Callable[[], None]:
        return lambda: None

    def revoke(self, partitions: list[TopicPartition]) -> None:
        return None
