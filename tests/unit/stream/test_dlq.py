"""Dead letters: headers out, and back from a consumed message."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from k2.stream.dlq import DeadLetter, message_source
from k2.stream.errors import DeadLetterFormatError


@dataclass
class FakeMessage:
    """The few ``confluent_kafka.Message`` methods ``from_message`` reads."""

    _value: bytes | None
    _key: bytes | None
    _headers: list[tuple[str, Any]] | None
    _topic: str = "k2.dlq"
    _partition: int = 0
    _offset: int = 5

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def headers(self) -> list[tuple[str, Any]] | None:
        return self._headers

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset


def test_headers_round_trip_through_a_message() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC)
    letter = DeadLetter(
        value=b"\xc3\x01raw",
        reason="price <= 0 (ω)",
        source=message_source("k2.trades", 1, 99),
        key=b"BHP",
        at=at,
    )
    headers = dict(letter.headers())
    assert headers == {
        "k2.reason": "price <= 0 (ω)".encode(),
        "k2.source": b"topic=k2.trades partition=1 offset=99",
        "k2.time": b"2026-01-02T03:04:05.678901+00:00",
    }
    back = DeadLetter.from_message(FakeMessage(letter.value, letter.key, letter.headers()))
    assert back == letter


def test_time_is_written_in_utc_and_defaults_to_now() -> None:
    local = datetime(2026, 1, 2, 13, 0, tzinfo=timezone(timedelta(hours=10)))
    letter = DeadLetter(value=b"x", reason="r", source="file=/x/7078.csv line=12", at=local)
    assert dict(letter.headers())["k2.time"] == b"2026-01-02T03:00:00+00:00"
    fresh = DeadLetter(value=b"x", reason="r", source="s")
    assert fresh.at.tzinfo is not None and abs(datetime.now(UTC) - fresh.at) < timedelta(seconds=5)


def test_message_without_k2_headers_is_refused() -> None:
    with pytest.raises(DeadLetterFormatError) as info:
        DeadLetter.from_message(FakeMessage(b"x", None, [("k2.reason", b"r")], _offset=17))
    assert info.value.offset == 17 and info.value.topic == "k2.dlq"
    bad_time = [("k2.reason", b"r"), ("k2.source", b"s"), ("k2.time", b"yesterday")]
    with pytest.raises(DeadLetterFormatError):
        DeadLetter.from_message(FakeMessage(b"x", None, bad_time))


def test_empty_value_reads_as_empty_bytes() -> None:
    letter = DeadLetter(value=b"", reason="empty", source="s")
    back = DeadLetter.from_message(FakeMessage(None, None, letter.headers()))
    assert back.value == b"" and back.key is None
