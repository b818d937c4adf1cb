"""Small, exact column builders shared by the feeds.

Prices and sizes are built from integer micro-units (value x 10^6) straight into Arrow decimal128
buffers, so a price on a 0.005 tick grid is exactly that decimal: no float rounding on the way.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl
import pyarrow as pa

__all__ = ["MICROS", "decimal_from_micros", "stamp_ingest", "utc_from_micros"]

#: Scale of every K2 decimal: Decimal(18, 6).
MICROS = 1_000_000
_DECIMAL = pa.decimal128(18, 6)


def decimal_from_micros(name: str, micros: np.ndarray) -> pl.Series:
    """A ``Decimal(18, 6)`` series whose unscaled values are ``micros`` (36.667 -> 36_667_000).

    Why: casting floats would round twice and casting integers scales them; writing the 128-bit
    little-endian words directly is exact and as fast as a copy.
    """
    values = np.ascontiguousarray(micros, dtype=np.int64)
    words = np.empty((len(values), 2), dtype=np.int64)
    words[:, 0] = values
    words[:, 1] = values >> 63  # sign extension into the high word
    array = pa.Array.from_buffers(_DECIMAL, len(values), [None, pa.py_buffer(words)])
    return pl.Series(name, array)


def utc_from_micros(name: str, micros: np.ndarray) -> pl.Series:
    """A ``Datetime("us", "UTC")`` series from microseconds since the Unix epoch."""
    return pl.Series(name, np.asarray(micros, dtype=np.int64)).cast(pl.Datetime("us", "UTC"))


def stamp_ingest(frame: pl.DataFrame, at: datetime) -> pl.DataFrame:
    """Set ``ingest_ts`` of every row to ``at`` (the moment the producer accepts the batch).

    Feeds leave ``ingest_ts`` equal to ``exchange_ts``; the caller that hands a batch to Kafka
    stamps it, so the field means what the contract says: when K2 accepted the tick.
    """
    return frame.with_columns(pl.lit(at, dtype=pl.Datetime("us", "UTC")).alias("ingest_ts"))
