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
from dataclasses import asdict, dataclass
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from k2.query.errors import InvalidCursorError
from k2.query.params import SYMBOL_RE

__all__ = ["Cursor", "fingerprint"]

_VERSION: Final = 1
_NOT_OURS = "not a cursor issued by this service; pass next_cursor unchanged"

_Int64 = Annotated[StrictInt, Field(ge=-(2**63), lt=2**63)]


class _Body(BaseModel):
    """The cursor's JSON: one-letter keys keep it short in a URL; every value is checked on the way in."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True)

    v: Literal[1]
    ts_us: _Int64 = Field(alias="t")
    symbol: Annotated[StrictStr, Field(pattern=SYMBOL_RE.pattern)] = Field(alias="s")
    sequence: _Int64 = Field(alias="q")
    snapshot_id: _Int64 | None = Field(alias="n")
    order: Literal["asc", "desc"] = Field(alias="o")
    query: StrictStr = Field(alias="f")


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
        raw = _Body(v=_VERSION, **asdict(self)).model_dump_json(by_alias=True).encode()
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
            body = _Body.model_validate_json(raw, by_alias=True, by_name=False)
        except (binascii.Error, ValueError, ValidationError) as exc:
            raise InvalidCursorError(_NOT_OURS) from exc
        cursor = cls(**body.model_dump(exclude={"v"}))
        if cursor.query != query:
            raise InvalidCursorError(
                "this cursor belongs to a different query: keep symbols, start, end and order unchanged "
                "while paging"
            )
        return cursor
