"""Tail messages to rows, with the pipeline's own verdicts: decode, validate, add lineage.

The hybrid view must show exactly what the pipeline will write, so the tail goes through the same
steps as a pipeline batch (``k2.pipeline.batch.BatchProcessor``): ``k2.schemas.decode_batch`` (an
undecodable payload or a tombstone is a dead letter, not a row), ``k2.schemas.validate.Validator``
with the pipeline's clock-skew bound and the reference table's symbols (a failing row is a dead
letter), then the ``kafka_partition``/``kafka_offset`` lineage columns the tables carry.
Duplicates are decided later, per query (``k2.hybrid.merge``), because whether a tail row is a
duplicate depends on which snapshot it is merged with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

from k2 import schemas
from k2.schemas.validate import Validator, known_symbols, with_message_times
from k2.stream.control import marker_mask

__all__ = ["LINEAGE", "DecodedTail", "TailDecoder", "known_symbols", "tail_schema"]

LINEAGE: dict[str, pl.DataType] = {"kafka_partition": pl.Int32(), "kafka_offset": pl.Int64()}


def tail_schema(kind: str) -> dict[str, pl.DataType]:
    """The columns of tail rows: the kind's canonical frame, then the lineage (the tables' order)."""
    return {**schemas.frame_schema(kind), **LINEAGE}


@dataclass(frozen=True)
class DecodedTail:
    """The valid rows of a run of messages, and how many messages were not rows (dead letters)."""

    rows: pl.DataFrame
    dead_letters: int


class TailDecoder:
    """Decodes and validates tail messages of the tick topics.

    Args:
        max_clock_skew_s: ``pipeline.max_clock_skew_s`` (exchange time may lead now by this much).
        symbols: returns the reference table's symbols, or None when it holds none (then any
            symbol passes, as in the pipeline); called on every batch, so it should be cheap.
    """

    def __init__(
        self, max_clock_skew_s: float, symbols: Callable[[], set[str] | None] = lambda: None
    ) -> None:
        self._skew = max_clock_skew_s
        self._symbols = symbols
        self._validator: Validator | None = None
        self._known: set[str] | None = None

    def _validator_now(self) -> Validator:
        known = self._symbols()
        if self._validator is None or known is not self._known:
            self._validator, self._known = Validator(self._skew, known), known
        return self._validator

    def decode(
        self,
        kind: str,
        values: list[bytes | None],
        partitions: np.ndarray,
        offsets: np.ndarray,
        times_us: np.ndarray | None = None,
    ) -> DecodedTail:
        """Rows (``tail_schema(kind)``) of the messages that decode and validate, in input order.

        ``times_us``: the messages' timestamps (``k2.stream.timestamps``), which "in the future" is
        judged against, as the pipeline judges it; None judges against the wall clock.
        """
        markers = marker_mask(values)
        if markers is not None:  # K2's expire markers take an offset but are no tick
            keep = np.flatnonzero(~markers)
            values, partitions, offsets = [values[i] for i in keep.tolist()], partitions[keep], offsets[keep]
            times_us = times_us[keep] if times_us is not None else None
        if not values:
            return DecodedTail(pl.DataFrame(schema=tail_schema(kind)), 0)
        # a tombstone is not a tick: dead-lettered like any undecodable payload, as the pipeline does
        payloads = [v or b"" for v in values]
        decoded = schemas.decode_batch(kind, payloads)
        frame = decoded.frame
        if schemas.INDEX_COLUMN in frame.columns:
            index = frame.get_column(schemas.INDEX_COLUMN).to_numpy()
            frame = frame.drop(schemas.INDEX_COLUMN)
            parts, offs = partitions[index], offsets[index]
            times = times_us[index] if times_us is not None else None
        else:
            parts, offs, times = partitions, offsets, times_us
        frame = frame.with_columns(
            pl.Series("kafka_partition", parts, dtype=pl.Int32),
            pl.Series("kafka_offset", offs, dtype=pl.Int64),
        )
        judged = frame if times is None else with_message_times(frame, times)
        bad = self._validator_now().reasons(kind, judged).is_not_null()
        if bad.any():
            frame = frame.filter(~bad)
        return DecodedTail(frame, len(values) - frame.height)
