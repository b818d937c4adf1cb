from __future__ import annotations

import base64
import json

import pytest

from k2.query.cursor import Cursor, fingerprint
from k2.query.errors import InvalidCursorError


def test_round_trip() -> None:
    query = fingerprint("trades", "BHP", 1, 2, "asc")
    cursor = Cursor(1_394_492_400_372_000, "BHP", 31, 5278257869543696240, "asc", query)
    text = cursor.encode()
    assert "=" not in text and "BHP" not in text  # opaque and URL-safe
    assert Cursor.decode(text, query=query) == cursor


def test_rejects_foreign_and_tampered_cursors() -> None:
    query = fingerprint("trades", "BHP")
    good = Cursor(1, "BHP", 1, None, "desc", query).encode()
    with pytest.raises(InvalidCursorError, match="different query"):
        Cursor.decode(good, query=fingerprint("trades", "RIO"))
    for body in ({"v": 2, "t": 1, "s": "BHP", "q": 1, "n": None, "o": "asc", "f": query},
                 {"v": 1, "t": "1; DROP", "s": "BHP", "q": 1, "n": None, "o": "asc", "f": query},
                 {"v": 1, "t": 1, "s": "BHP' OR '1'='1", "q": 1, "n": None, "o": "asc", "f": query},
                 {"v": 1, "t": 2**70, "s": "BHP", "q": 1, "n": None, "o": "asc", "f": query}):  # fmt: skip
        text = base64.urlsafe_b64encode(json.dumps(body).encode()).decode()
        with pytest.raises(InvalidCursorError):
            Cursor.decode(text, query=query)
    for junk in ("", "%%%", "x" * 600, "bnVsbA"):
        with pytest.raises(InvalidCursorError):
            Cursor.decode(junk, query=query)
