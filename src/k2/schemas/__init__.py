"""K2's data contract: versioned Avro schemas and everything derived from them.

The ``.avsc`` files in ``k2/schemas/avro`` are the single source of truth. From them come the
Polars frame schema feeds build and the pipeline consumes (``frame_schema``), the Arrow and
Iceberg schemas of the lake tables (``arrow_schema``, ``iceberg_schema``), and the wire format
(``encode_batch`` / ``decode_batch``: Avro single-object encoding, or Confluent framing).
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa
from pyiceberg.schema import Schema as IcebergSchema

from k2.schemas.decode import INDEX_COLUMN, DecodeResult, decode_batch, decode_payload
from k2.schemas.encode import encode_batch
from k2.schemas.errors import (
    CorruptPayloadError,
    EncodeError,
    IncompatibleSchemaError,
    SchemaError,
    SchemaMismatchError,
    UnknownSchemaError,
)
from k2.schemas.fields import FieldSpec, arrow_schema_of, iceberg_schema_of
from k2.schemas.ids import TICK_KINDS, message_id, message_ids
from k2.schemas.registry import AvroSchema, SchemaRegistry, builtin_registry, default_registry
from k2.schemas.wire import Framing, parse_header

__all__ = [
    "INDEX_COLUMN",
    "KINDS",
    "TICK_KINDS",
    "AvroSchema",
    "CorruptPayloadError",
    "DecodeResult",
    "EncodeError",
    "FieldSpec",
    "Framing",
    "IncompatibleSchemaError",
    "SchemaError",
    "SchemaMismatchError",
    "SchemaRegistry",
    "UnknownSchemaError",
    "arrow_schema",
    "avro_schema",
    "builtin_registry",
    "decode_batch",
    "decode_payload",
    "default_registry",
    "encode_batch",
    "frame_schema",
    "iceberg_schema",
    "message_id",
    "message_ids",
    "parse_header",
]

#: Every kind with a shipped schema: the two tick streams, then the reference data.
KINDS = ("trades", "quotes", "instruments", "corporate_actions")


def avro_schema(kind: str) -> AvroSchema:
    """The current Avro schema of a kind (from the built-in registry).

    Raises:
        SchemaError: unknown kind.
    """
    return default_registry().current(kind)


def frame_schema(kind: str) -> dict[str, pl.DataType]:
    """Column -> Polars dtype of a kind's frames, in order (a fresh dict each call).

    Raises:
        SchemaError: unknown kind.
    """
    return dict(avro_schema(kind).frame_schema)


def arrow_schema(kind: str) -> pa.Schema:
    """The Arrow schema of a kind (nullability and Iceberg field ids included).

    Raises:
        SchemaError: unknown kind.
    """
    return arrow_schema_of(avro_schema(kind).fields)


def iceberg_schema(kind: str) -> IcebergSchema:
    """The Iceberg schema of a kind: Avro field ids, required unless nullable in Avro.

    Raises:
        SchemaError: unknown kind.
    """
    return iceberg_schema_of(avro_schema(kind).fields)
