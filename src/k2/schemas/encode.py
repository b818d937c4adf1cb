"""``encode_batch``: a Polars frame to one framed Avro payload per row, vectorised.

The frame is first conformed to the writer schema's frame shape (column order and dtypes, nulls
only where Avro allows them); each column is then turned into NumPy arrays once, and rows are
encoded in chunks so that the padded byte matrices stay in cache and memory stays bounded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from k2.schemas.binary import (
    Piece,
    assemble,
    bytes_piece,
    constant_piece,
    decimal_piece,
    fixed_piece,
    split_rows,
    string_buffers,
    union_prefix,
    varint_piece,
    zigzag,
)
from k2.schemas.errors import EncodeError, SchemaError
from k2.schemas.fields import FieldSpec
from k2.schemas.registry import AvroSchema, SchemaRegistry, default_registry
from k2.schemas.wire import confluent_header, single_object_header

__all__ = ["conform", "encode_batch", "encode_bodies", "payload_header"]

#: Rows encoded per step: big enough to amortise NumPy's per-call cost, small enough for the cache.
CHUNK_ROWS = 8_192


@dataclass
class _Column:
    """One field's values as NumPy arrays, for the whole frame."""

    spec: FieldSpec
    null: np.ndarray | None  # True where null (nullable fields only)
    values: np.ndarray | None = None  # zigzagged uint64, unscaled int64 or raw fixed-width values
    offsets: np.ndarray | None = None  # strings: Arrow offsets (rows + 1)
    data: np.ndarray | None = None  # strings: UTF-8 bytes


def conform(kind: str, schema: AvroSchema, df: pl.DataFrame) -> pl.DataFrame:
    """The frame with exactly the schema's columns, order and dtypes.

    Missing nullable columns become null (so a frame of an older shape encodes with a newer schema);
    extra columns are dropped; other dtypes are cast strictly.

    Raises:
        EncodeError: a required column is missing or null, or a column cannot be cast.
    """
    exprs: list[pl.Expr] = []
    for spec in schema.fields:
        dtype = schema.frame_schema[spec.name]
        if spec.name not in df.columns:
            if not spec.nullable:
                raise EncodeError(
                    f"{kind}: required column {spec.name!r} is missing", kind=kind, column=spec.name
                )
            exprs.append(pl.lit(None, dtype).alias(spec.name))
        elif df.schema[spec.name] == dtype:
            exprs.append(pl.col(spec.name))
        else:
            try:
                df.select(pl.col(spec.name).head(0).cast(dtype, strict=True))
                exprs.append(pl.col(spec.name).cast(dtype, strict=True))
            except pl.exceptions.PolarsError as exc:
                raise EncodeError(
                    f"{kind}: column {spec.name!r} of dtype {df.schema[spec.name]} cannot become {dtype}",
                    kind=kind,
                    column=spec.name,
                ) from exc
    try:
        out = df.select(exprs)
    except pl.exceptions.PolarsError as exc:
        bad = next(iter(df.columns), "?")
        for spec in schema.fields:  # find the culprit for the message
            if spec.name in df.columns:
                try:
                    df.select(pl.col(spec.name).cast(schema.frame_schema[spec.name], strict=True))
                except pl.exceptions.PolarsError:
                    bad = spec.name
                    break
        raise EncodeError(
            f"{kind}: column {bad!r} does not fit {schema}: {exc}", kind=kind, column=bad
        ) from exc
    required = [s.name for s in schema.fields if not s.nullable]
    if required and len(out):
        counts = out.select(pl.col(required).null_count()).row(0)
        for name, count in zip(required, counts, strict=True):
            if count:
                row = int(out[name].is_null().arg_true()[0])
                raise EncodeError(
                    f"{kind}: {count} null value(s) in required column {name!r} (first at row {row})",
                    kind=kind,
                    column=name,
                    row=row,
                )
    return out


def _column(spec: FieldSpec, series: pl.Series) -> _Column:
    null = series.is_null().to_numpy() if spec.nullable and series.null_count() else None
    col = _Column(spec, null)
    if spec.base == "string":
        col.offsets, col.data = string_buffers(series)
        return col
    filled = series.fill_null(strategy="zero") if null is not None and spec.base != "enum" else series
    if spec.base == "enum":
        physical = series.to_physical().fill_null(0)
        col.values = zigzag(physical.cast(pl.Int64).to_numpy())
    elif spec.logical == "decimal":
        col.values = filled.to_physical().cast(pl.Int64).to_numpy()
    elif spec.base in ("int", "long"):
        col.values = zigzag(filled.to_physical().cast(pl.Int64).to_numpy())
    elif spec.base == "boolean":
        col.values = filled.cast(pl.UInt8).to_numpy()
    elif spec.base == "float":
        col.values = filled.cast(pl.Float32).to_numpy().astype("<f4", copy=False)
    else:  # double
        col.values = filled.cast(pl.Float64).to_numpy().astype("<f8", copy=False)
    return col


def _pieces(col: _Column, lo: int, hi: int) -> list[Piece]:
    spec = col.spec
    if col.null is not None:
        null: np.ndarray | None = col.null[lo:hi]
    else:
        null = np.zeros(hi - lo, dtype=bool) if spec.nullable else None
    if spec.base == "string":
        assert col.offsets is not None and col.data is not None
        offs = col.offsets[lo : hi + 1]
        lens = np.diff(offs)
        if null is not None:
            lens = np.where(null, 0, lens)
        head = varint_piece((lens << 1).astype(np.uint64))
        if null is not None:
            head = union_prefix(head, null, spec.null_branch)
        return [head, bytes_piece(col.data, offs[:-1], lens)]
    assert col.values is not None
    values = col.values[lo:hi]
    if spec.logical == "decimal":
        piece = decimal_piece(values)
    elif spec.base in ("int", "long", "enum"):
        piece = varint_piece(values)
    else:
        piece = fixed_piece(values, values.dtype.itemsize)
    if null is not None:
        piece = union_prefix(piece, null, spec.null_branch)
    return [piece]


def encode_bodies(schema: AvroSchema, frame: pl.DataFrame, header: bytes = b"") -> list[bytes]:
    """Avro binary bodies of a conformed frame, each prefixed with ``header``."""
    n = frame.height
    if n == 0:
        return []
    columns = [_column(spec, frame.get_column(spec.name)) for spec in schema.fields]
    out: list[bytes] = []
    for lo in range(0, n, CHUNK_ROWS):
        hi = min(n, lo + CHUNK_ROWS)
        pieces: list[Piece] = [constant_piece(header, hi - lo)] if header else []
        for col in columns:
            pieces.extend(_pieces(col, lo, hi))
        flat, row_lens = assemble(pieces)
        out.extend(split_rows(flat, row_lens))
    return out


def encode_batch(
    kind: str,
    df: pl.DataFrame,
    *,
    registry: SchemaRegistry | None = None,
    version: int | None = None,
    schema_id: int | None = None,
) -> list[bytes]:
    """Encode every row of a frame as one framed Avro payload, in row order.

    Args:
        kind: "trades", "quotes", "instruments" or "corporate_actions".
        df: the rows, in (or castable to) ``frame_schema(kind)``; extra columns are ignored.
        registry: the schemas to use; default: the built-in ones.
        version: the writer schema version; default: the kind's current version.
        schema_id: a Confluent schema id: frame as Confluent (``00`` + id) instead of single-object.

    Raises:
        EncodeError: the frame does not fit the schema (the error names the column and row).
        SchemaError: the kind or version is unknown.
    """
    reg = registry or default_registry()
    schema = reg.current(kind) if version is None else reg.get(kind, version)
    return encode_bodies(schema, conform(kind, schema, df), payload_header(schema, schema_id))


def payload_header(schema: AvroSchema, schema_id: int | None = None) -> bytes:
    """The framing header: single-object (fingerprint), or Confluent when a schema id is given.

    Raises:
        SchemaError: the schema id is not an unsigned 32-bit integer.
    """
    if schema_id is None:
        return single_object_header(schema.fingerprint)
    if not 0 <= schema_id < 2**32:
        raise SchemaError(f"Confluent schema id {schema_id} is not an unsigned 32-bit integer")
    return confluent_header(schema_id)
