"""Header framing: single-object and Confluent."""

from __future__ import annotations

import pytest

from k2.schemas import CorruptPayloadError, parse_header
from k2.schemas.wire import confluent_header, single_object_header


def test_single_object_header_round_trip() -> None:
    header = parse_header(single_object_header(bytes(range(8))) + b"body")
    assert (header.framing, header.size, header.fingerprint, header.schema_id) == (
        "single-object",
        10,
        bytes(range(8)),
        None,
    )


def test_confluent_header_round_trip_is_big_endian() -> None:
    raw = confluent_header(0x0A0B0C0D)
    assert raw == b"\x00\x0a\x0b\x0c\x0d"
    header = parse_header(raw + b"x")
    assert (header.framing, header.size, header.schema_id) == ("confluent", 5, 0x0A0B0C0D)


@pytest.mark.parametrize("payload", [b"", b"\xc3\x01\x00", b"\x00\x01", b"{json}", b"\xc3\x02" + bytes(8)])
def test_bad_headers(payload: bytes) -> None:
    with pytest.raises(CorruptPayloadError) as info:
        parse_header(payload)
    assert info.value.reason


def test_fingerprint_must_have_eight_bytes() -> None:
    with pytest.raises(ValueError):
        single_object_header(b"short")
