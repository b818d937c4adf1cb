"""Constant SQL fragments and the few helpers that assemble them.

Nothing here takes a caller's value: column lists, placeholders and sort directions are chosen
from fixed sets, and values are appended to a parameter list that DuckDB binds. Keeping every
fragment in one module makes that easy to audit.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

from k2.lake.stamp import STAMP_COLUMN
from k2.types import StreamKind

__all__ = [
    "LINEAGE_COLUMNS",
    "QUOTE_COLUMNS",
    "TRADE_COLUMNS",
    "columns",
    "cut_relation",
    "from_us",
    "order_by",
    "placeholders",
]

TRADE_COLUMNS = (
    "message_id", "exchange", "symbol", "session", "sequence", "exchange_ts", "ingest_ts",
    "price", "size", "trade_id", "qualifiers", "venue",
)  # fmt: skip
QUOTE_COLUMNS = (
    "message_id", "exchange", "symbol", "session", "sequence", "exchange_ts", "ingest_ts",
    "bid_price", "ask_price", "bid_size", "ask_size",
)  # fmt: skip
LINEAGE_COLUMNS = ("kafka_partition", "kafka_offset")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def columns(kind: StreamKind, *, lineage: bool = True, prefix: str = "") -> str:
    """The canonical column list of a tick kind, optionally qualified (``t.symbol``)."""
    names: tuple[str, ...] = TRADE_COLUMNS if kind == "trades" else QUOTE_COLUMNS
    if lineage:
        names = names + LINEAGE_COLUMNS
    return ", ".join(f"{prefix}{n}" for n in names)


def placeholders(count: int) -> str:
    """'?, ?, ?' for an IN list of ``count`` bound values."""
    if count < 1:
        raise ValueError("an IN list needs at least one value")
    return ", ".join("?" * count)


def order_by(direction: Literal["asc", "desc"], *keys: str) -> str:
    """ORDER BY over fixed keys in one direction (the direction comes from a two-value Literal)."""
    word = "DESC" if direction == "desc" else "ASC"
    return "ORDER BY " + ", ".join(f"{k} {word}" for k in keys)


def from_us(micros: int) -> datetime:
    """An aware UTC datetime from epoch microseconds (exact; DuckDB binds it as TIMESTAMPTZ)."""
    return _EPOCH + timedelta(microseconds=micros)


def cut_relation(relation: str) -> str:
    """Rows of ``read_parquet(?, ...)`` committed at or before a ms bound right after its file list.

    Files written before the stamp column existed lack it: read by name, they hold null there,
    and unstamped rows precede every stamped commit (k2.lake.stamp).
    """
    by_name = relation.replace("read_parquet(?", "read_parquet(?, union_by_name = true", 1)
    return f"(SELECT * FROM {by_name} WHERE {STAMP_COLUMN} IS NULL OR {STAMP_COLUMN} <= ?)"
