"""The two framings of a Kafka message value: Avro single-object encoding and Confluent's.

Single-object (the default, the Avro specification's own): ``C3 01`` + the 8-byte little-endian
CRC-64-AVRO fingerprint of the writer schema's canonical form + the Avro binary body. A reader
needs only the set of known schemas, no server.

Confluent: ``00`` + the 4-byte big-endian schema id a Confluent schema registry assigned + the body.
K2 has no registry client: ids are bound by the caller (``SchemaRegistry.bind_schema_id``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

from k2.schemas.errors import CorruptPayloadError

__all__ = [
    "CONFLUENT_HEADER_SIZE",
    "CONFLUENT_MAGIC",
    "SINGLE_OBJECT_HEADER_SIZE",
    "SINGLE_OBJECT_MAGIC",
    "Framing",
    "Header",
    "confluent_header",
    "describe_bad_magic",
    "parse_header",
    "single_object_header",
]

Framing = Literal["single-object", "confluent"]

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
SINGLE_OBJECT_HEADER_SIZE = 10
CONFLUENT_MAGIC = b"\x00"
CONFLUENT_HEADER_SIZE = 5


@dataclass(frozen=True)
class Header:
    """What a payload's header says about its writer schema.

    Attributes:
        framing: "single-object" or "confluent".
        size: header length in bytes; the Avro body starts here.
        fingerprint: the 8 fingerprint bytes (single-object framing).
        schema_id: the Confluent schema id (Confluent framing).
    """

    framing: Framing
    size: int
    fingerprint: bytes | None = None
    schema_id: int | None = None


def single_object_header(fingerprint: bytes) -> bytes:
    """The 10 header bytes of a single-object payload."""
    if len(fingerprint) != 8:
        raise ValueError(f"a CRC-64-AVRO fingerprint has 8 bytes, got {len(fingerprint)}")
    return SINGLE_OBJECT_MAGIC + fingerprint


def confluent_header(schema_id: int) -> bytes:
    """The 5 header bytes of a Confluent-framed payload."""
    return CONFLUENT_MAGIC + struct.pack(">I", schema_id)


def parse_header(payload: bytes) -> Header:
    """Read the framing of one payload.

    Raises:
        CorruptPayloadError: the payload is too short or starts with neither magic.
    """
    if payload[:2] == SINGLE_OBJECT_MAGIC:
        if len(payload) < SINGLE_OBJECT_HEADER_SIZE:
            raise CorruptPayloadError(f"truncated single-object header ({len(payload)} bytes)")
        return Header("single-object", SINGLE_OBJECT_HEADER_SIZE, fingerprint=bytes(payload[2:10]))
    if payload[:1] == CONFLUENT_MAGIC:
        if len(payload) < CONFLUENT_HEADER_SIZE:
            raise CorruptPayloadError(f"truncated Confluent header ({len(payload)} bytes)")
        return Header("confluent", CONFLUENT_HEADER_SIZE, schema_id=struct.unpack(">I", payload[1:5])[0])
    raise CorruptPayloadError(describe_bad_magic(payload))


def describe_bad_magic(payload: bytes) -> str:
    """The reason given for a payload that is neither single-object nor Confluent framed."""
    if not payload:
        return "empty payload"
    return f"not an Avro single-object or Confluent payload (starts {bytes(payload[:2]).hex()})"
