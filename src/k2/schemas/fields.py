"""Avro field descriptions and the Polars, Arrow and Iceberg types derived from them.

The Avro schema is the one source of truth: every other shape of the same record (the Polars frame
the feeds build and the pipeline consumes, the Arrow schema handed to pyiceberg, the Iceberg table
schema) is computed here from the parsed fields, so the four can never drift apart.

Only the Avro types that K2's vectorised codec can encode are accepted; anything else is refused
when a schema is registered rather than when the first batch fails.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl
import pyarrow as pa
from pyiceberg.schema import Schema as IcebergSchema
from pyiceberg.types import (
    BooleanType,
    DateType,
    DecimalType,
    DoubleType,
    FloatType,
    IcebergType,
    IntegerType,
    LongType,
    NestedField,
    StringType,
    TimestamptzType,
)

from k2.schemas.errors import SchemaError

__all__ = [
    "FieldSpec",
    "arrow_schema_of",
    "frame_schema_of",
    "iceberg_schema_of",
    "parse_fields",
    "polars_dtype",
]

_PRIMITIVES = frozenset({"string", "long", "int", "boolean", "float", "double"})
#: Decimals travel as unscaled int64 in the codec, so 18 digits is the most it can carry.
MAX_DECIMAL_PRECISION = 18


@dataclass(frozen=True)
class FieldSpec:
    """One record field, reduced to what the codec and the type derivations need.

    Attributes:
        name: the field (and column) name.
        base: Avro physical type: string, long, int, boolean, float, double, bytes or enum.
        logical: Avro logical type: date, timestamp-micros, decimal, or None.
        nullable: the field is a union with null.
        null_branch: position of "null" in the union (0 for the usual ["null", T]).
        field_id: Iceberg field id (the "field-id" attribute, else the 1-based position).
        has_default: the field declares a default, so a reader may add it to older data.
    """

    name: str
    base: str
    logical: str | None
    nullable: bool
    null_branch: int
    field_id: int
    has_default: bool
    precision: int = 0
    scale: int = 0
    symbols: tuple[str, ...] = ()

    @property
    def value_branch(self) -> int:
        """Union branch index of a non-null value."""
        return 1 - self.null_branch


def _field_spec(position: int, field: Mapping[str, Any], record: str) -> FieldSpec:
    name = str(field["name"])
    ftype: Any = field["type"]
    nullable, null_branch = False, 0
    if isinstance(ftype, list):
        branches = [b for b in ftype if b != "null"]
        if len(ftype) != 2 or len(branches) != 1:
            raise SchemaError(f"{record}.{name}: only unions of null and one type are supported")
        nullable, null_branch, ftype = True, ftype.index("null"), branches[0]
    logical: str | None = None
    precision = scale = 0
    symbols: tuple[str, ...] = ()
    if isinstance(ftype, Mapping):
        logical = ftype.get("logicalType")
        base = str(ftype["type"])
        if base == "enum":
            symbols = tuple(str(s) for s in ftype["symbols"])
        elif logical == "decimal":
            precision, scale = int(ftype["precision"]), int(ftype.get("scale", 0))
    else:
        base = str(ftype)
    supported = (
        (base in _PRIMITIVES and logical is None)
        or (base == "enum" and logical is None)
        or (base == "int" and logical == "date")
        or (base == "long" and logical == "timestamp-micros")
        or (base == "bytes" and logical == "decimal" and 0 < precision <= MAX_DECIMAL_PRECISION)
    )
    if not supported:
        raise SchemaError(
            f"{record}.{name}: Avro type {base}/{logical} is not supported by K2's codec "
            f"(decimals are bytes with precision <= {MAX_DECIMAL_PRECISION})"
        )
    return FieldSpec(
        name=name,
        base=base,
        logical=logical,
        nullable=nullable,
        null_branch=null_branch,
        field_id=int(field.get("field-id", position + 1)),
        has_default="default" in field,
        precision=precision,
        scale=scale,
        symbols=symbols,
    )


def parse_fields(schema: Mapping[str, Any]) -> tuple[FieldSpec, ...]:
    """The fields of a record schema, in order.

    Raises:
        SchemaError: the schema is not a record, repeats a field or field id, or uses a type the codec
            cannot encode.
    """
    if schema.get("type") != "record":
        raise SchemaError(f"expected an Avro record schema, got type {schema.get('type')!r}")
    record = str(schema.get("name", "?"))
    specs = tuple(_field_spec(i, f, record) for i, f in enumerate(schema["fields"]))
    for attr in ("name", "field_id"):
        values = [getattr(s, attr) for s in specs]
        if len(set(values)) != len(values):
            raise SchemaError(f"{record}: duplicate field {attr} in {values}")
    return specs


def polars_dtype(spec: FieldSpec) -> pl.DataType:
    """The Polars dtype of a field (nullability is not part of a Polars dtype)."""
    if spec.logical == "date":
        return pl.Date()
    if spec.logical == "timestamp-micros":
        return pl.Datetime("us", "UTC")
    if spec.logical == "decimal":
        return pl.Decimal(spec.precision, spec.scale)
    if spec.base == "enum":
        return pl.Enum(list(spec.symbols))
    return {
        "string": pl.String(),
        "long": pl.Int64(),
        "int": pl.Int32(),
        "boolean": pl.Boolean(),
        "float": pl.Float32(),
        "double": pl.Float64(),
    }[spec.base]


def _arrow_type(spec: FieldSpec) -> pa.DataType:
    if spec.logical == "date":
        return pa.date32()
    if spec.logical == "timestamp-micros":
        return pa.timestamp("us", tz="UTC")
    if spec.logical == "decimal":
        return pa.decimal128(spec.precision, spec.scale)
    return {
        "string": pa.large_string(),
        "enum": pa.large_string(),
        "long": pa.int64(),
        "int": pa.int32(),
        "boolean": pa.bool_(),
        "float": pa.float32(),
        "double": pa.float64(),
    }[spec.base]


def _iceberg_type(spec: FieldSpec) -> IcebergType:
    if spec.logical == "date":
        return DateType()
    if spec.logical == "timestamp-micros":
        return TimestamptzType()
    if spec.logical == "decimal":
        return DecimalType(spec.precision, spec.scale)
    return {
        "string": StringType(),
        "enum": StringType(),
        "long": LongType(),
        "int": IntegerType(),
        "boolean": BooleanType(),
        "float": FloatType(),
        "double": DoubleType(),
    }[spec.base]


def frame_schema_of(fields: Sequence[FieldSpec]) -> dict[str, pl.DataType]:
    """Column name -> Polars dtype, in Avro field order."""
    return {f.name: polars_dtype(f) for f in fields}


def arrow_schema_of(fields: Sequence[FieldSpec]) -> pa.Schema:
    """The Arrow schema, shaped as pyiceberg's own ``schema_to_pyarrow`` shapes it.

    Strings are ``large_string`` (what Polars exports, so no cast is needed), nullability follows the
    Avro unions and each field carries its Iceberg id as ``PARQUET:field_id`` metadata.
    """
    return pa.schema(
        [
            pa.field(
                f.name,
                _arrow_type(f),
                nullable=f.nullable,
                metadata={b"PARQUET:field_id": str(f.field_id).encode()},
            )
            for f in fields
        ]
    )


def iceberg_schema_of(fields: Sequence[FieldSpec]) -> IcebergSchema:
    """The Iceberg schema: Avro field ids, required unless the Avro field is a union with null."""
    return IcebergSchema(
        *(
            NestedField(
                field_id=f.field_id, name=f.name, field_type=_iceberg_type(f), required=not f.nullable
            )
            for f in fields
        )
    )
