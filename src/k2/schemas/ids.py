"""Message ids: the stable identity of a tick, the key of deduplication.

``blake2b(digest_size=16)`` of ``"{kind}|{exchange}|{symbol}|{session:%Y-%m-%d}|{sequence}"`` as 32
lowercase hex characters. The same tick replayed from a file or re-sent after a crash gets the
same id, so duplicates are recognisable anywhere downstream.
"""

from __future__ import annotations

from hashlib import blake2b

import polars as pl

from k2.schemas.errors import SchemaError
from k2.types import TICK_KINDS

__all__ = ["TICK_KINDS", "message_id", "message_ids"]

_KEY_COLUMNS = ("exchange", "symbol", "session", "sequence")


def message_id(kind: str, exchange: str, symbol: str, session: str, sequence: int) -> str:
    """One message id; ``session`` is the ISO date (``date.isoformat()``)."""
    return blake2b(f"{kind}|{exchange}|{symbol}|{session}|{sequence}".encode(), digest_size=16).hexdigest()


def message_ids(kind: str, df: pl.DataFrame) -> pl.Series:
    """The message id of every row, as a String series named ``message_id``.

    The hashed text is built by Polars in one vectorised expression; only the hash itself is a
    per-row C call (about 1.4 M rows/s here), as neither Polars nor Arrow offers BLAKE2b.

    Raises:
        SchemaError: the kind is not a tick kind, or a key column is missing or null.
    """
    if kind not in TICK_KINDS:
        raise SchemaError(f"message ids exist for {' and '.join(TICK_KINDS)}, not {kind!r}")
    missing = [c for c in _KEY_COLUMNS if c not in df.columns]
    if missing:
        raise SchemaError(f"{kind}: cannot compute message ids without column(s) {', '.join(missing)}")
    text = df.select(
        pl.concat_str(
            [
                pl.lit(kind),
                pl.col("exchange"),
                pl.col("symbol"),
                pl.col("session").cast(pl.Date).dt.strftime("%Y-%m-%d"),
                pl.col("sequence").cast(pl.Int64).cast(pl.String),
            ],
            separator="|",
        )
    ).to_series()
    if text.null_count():
        raise SchemaError(f"{kind}: null in a message id column ({', '.join(_KEY_COLUMNS)})")
    ids = [blake2b(t.encode(), digest_size=16).hexdigest() for t in text.to_list()]
    return pl.Series("message_id", ids, dtype=pl.String)
