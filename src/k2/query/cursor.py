"""Opaque pagination cursors: the sort key of the last row returned, plus what pins the query.

A cursor encodes (exchange_ts, symbol, sequence) of the last row of a page, the snapshot the
first page read (so every page reads the same table state, however many commits land between
requests), the order, and a fingerprint of the query (kind, symbols, window). It is URL-safe
base64 of compact JSON: opaque to callers, but nothing in it is trusted: it is validated on the
way in and its values are bound as SQL parameters like any other.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Literal

from k2.query.errors import InvalidCursorError
from k2.query.params import SYMBOL_RE

__all__ = ["Cursor", "fingerprint"]

_VERSION = 1


def fingerprint(*parts: object) -> str:
    """A short, stable digest of the query a cursor belongs to."""
    text = "|".join(str(p) for p in parts)
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


@dataclass(frozen=True)
class Cursor:
    """Where the next page starts (strictly after this key in the query's order)."""

    ts_us: int
    symbol: str
    sequence: int
    snapshot_id: int | None
    order: Literal["asc", "desc"]
    query: str

    def encode(self) -> str:
        body = {
            "v": _VERSION,
            "t": self.ts_us,
            "s": self.symbol,
            "q": self.sequence,
            "n": self.snapshot_id,
            "o": self.order,
            "f": self.query,
        }
        raw = json.dumps(body, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str, *, query: str) -> Cursor:
        """Parse and check a cursor against the query it is used with.

        Raises:
            InvalidCursorError: malformed, from another version, or issued for a different query.
        """
        if len(text) > 512:
            raise InvalidCursorError("too long to be a cursor issued by this service")
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            body = json.loads(raw)
            cursor = cls(
                ts_us=_int(body["t"]),
                symbol=str(body["s"]),
                sequence=_int(body["q"]),
                snapshot_id=None if body["n"] is None else _int(body["n"]),
                order="desc" if body["o"] == "desc" else "asc",
                query=str(body["f"]),
            )
            version = body["v"]
        except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise InvalidCursorError(
                "not a cursor issued by this service; pass next_cursor unchanged"
            ) from exc
        if version != _VERSION or not SYMBOL_RE.match(cursor.symbol):
            raise InvalidCursorError("not a cursor issued by this service; pass next_cursor unchanged")
        if cursor.query != query:
            raise InvalidCursorError(
                "this cursor belongs to a different query: keep symbols, start, end and order unchanged "
                "while paging"
            )
        return cursor


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("integer expected")
    if not -(2**63) <= value < 2**63:
        raise ValueError("out of range")
    return value
