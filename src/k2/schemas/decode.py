"""``decode_batch``: framed Avro payloads to one Polars frame in the kind's current schema.

1. All headers are checked at once with NumPy over the joined payloads (magic, length, fingerprint
   or Confluent id), and rows are grouped by writer schema.
2. Each group is decoded in Rust through an in-memory Avro container (``container.py``), with
   per-record fastavro only for payloads that fail, so one bad message never costs the batch.
3. Each group is projected onto the reader schema (fields added since the writer's version become
   null; fields since removed are dropped), and rows are put back in input order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from k2.schemas.container import decode_bodies, decode_body
from k2.schemas.errors import CorruptPayloadError, SchemaError, SchemaMismatchError
from k2.schemas.joined import JoinedPayloads
from k2.schemas.registry import AvroSchema, SchemaRegistry, default_registry
from k2.schemas.wire import (
    CONFLUENT_HEADER_SIZE,
    SINGLE_OBJECT_HEADER_SIZE,
    describe_bad_magic,
    parse_header,
)

__all__ = ["INDEX_COLUMN", "DecodeResult", "decode_batch", "decode_payload", "project"]

#: Added to ``DecodeResult.frame`` when some payloads failed: each row's index in the input.
INDEX_COLUMN = "_index"


@dataclass(frozen=True)
class DecodeResult:
    """What a batch decoded to.

    Attributes:
        frame: decoded rows in ``frame_schema(kind)``, in input order. When some payloads failed it
            has one more column, ``_index`` (Int64): the input position of each row.
        errors: ``(input index, reason)`` of every payload that could not be decoded.
        failures: the same failures as typed errors (``UnknownSchemaError``, ``CorruptPayloadError``,
            ``SchemaMismatchError``, ``IncompatibleSchemaError``), each with its ``index``.
    """

    frame: pl.DataFrame
    errors: list[tuple[int, str]] = field(default_factory=list)
    failures: list[SchemaError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def indices(self) -> np.ndarray:
        """Input index of each frame row."""
        if INDEX_COLUMN in self.frame.columns:
            return self.frame.get_column(INDEX_COLUMN).to_numpy()
        return np.arange(self.frame.height, dtype=np.int64)

    def raise_first(self) -> None:
        """Raise the first failure, if any (for callers that want all or nothing).

        Raises:
            SchemaError: the first payload that failed, typed as in ``failures``.
        """
        if self.failures:
            raise self.failures[0]


def project(frame: pl.DataFrame, reader: AvroSchema) -> pl.DataFrame:
    """A frame decoded with a writer schema, reshaped to the reader's columns, order and dtypes."""
    exprs = []
    for name, dtype in reader.frame_schema.items():
        if name in frame.columns:
            exprs.append(pl.col(name).cast(dtype))
        else:
            exprs.append(pl.lit(None, dtype).alias(name))
    return frame.select(exprs)


def _resolve(
    kind: str, reg: SchemaRegistry, keys: np.ndarray, lookup: str
) -> tuple[list[AvroSchema | None], list[SchemaError | None]]:
    """Writer schema (or the error) of each distinct fingerprint / schema id."""
    schemas: list[AvroSchema | None] = []
    errors: list[SchemaError | None] = []
    for key in keys.tolist():
        try:
            if lookup == "fingerprint":
                writer = reg.by_fingerprint(int(key).to_bytes(8, "little"))
            else:
                writer = reg.by_schema_id(int(key))
            if writer.kind != kind:
                raise SchemaMismatchError(
                    f"payload written with {writer} ({writer.kind}), expected {kind}",
                    expected=kind,
                    found=writer.kind,
                )
            reg.check_readable(writer)
            schemas.append(writer)
            errors.append(None)
        except SchemaError as exc:
            schemas.append(None)
            errors.append(exc)
    return schemas, errors


def decode_batch(
    kind: str, payloads: Sequence[bytes], *, registry: SchemaRegistry | None = None
) -> DecodeResult:
    """Decode framed payloads of one kind (single-object or Confluent, any known schema version).

    Never raises for a bad payload: it is reported in ``errors`` / ``failures`` and the others are
    decoded. Use ``DecodeResult.raise_first`` for all-or-nothing.

    Raises:
        SchemaError: the kind is unknown to the registry.
    """
    reg = registry or default_registry()
    reader = reg.current(kind)
    n = len(payloads)
    if n == 0:
        return DecodeResult(pl.DataFrame(schema=reader.frame_schema))
    if isinstance(payloads, JoinedPayloads):  # the native consumer's batch: already one buffer
        lens, buf, starts = payloads.lens, payloads.buf, payloads.starts
    else:
        lens = np.fromiter(map(len, payloads), dtype=np.int64, count=n)
        buf = np.frombuffer(b"".join(payloads), dtype=np.uint8)
        starts = np.cumsum(lens) - lens

    def at(offset: int, count: int, rows: np.ndarray) -> np.ndarray:
        if not len(buf):
            return np.zeros((len(rows), count), dtype=np.uint8)
        return buf.take(starts[rows, None] + offset + np.arange(count), mode="clip")

    everything = np.arange(n)
    first = at(0, 2, everything)
    single = (lens >= SINGLE_OBJECT_HEADER_SIZE) & (first[:, 0] == 0xC3) & (first[:, 1] == 0x01)
    confluent = (lens >= CONFLUENT_HEADER_SIZE) & (first[:, 0] == 0x00)
    group = np.full(n, -1, dtype=np.int64)
    header = np.where(single, SINGLE_OBJECT_HEADER_SIZE, CONFLUENT_HEADER_SIZE)
    failures: list[SchemaError] = []
    writers: list[AvroSchema] = []
    for mask, width, lookup, dtype in (
        (single, 8, "fingerprint", "<u8"),
        (confluent, 4, "schema id", ">u4"),
    ):
        rows = np.flatnonzero(mask)
        if not len(rows):
            continue
        offset = 2 if lookup == "fingerprint" else 1
        keys = np.ascontiguousarray(at(offset, width, rows)).view(dtype).ravel()
        uniq, inverse = np.unique(keys, return_inverse=True)
        schemas, lookup_errors = _resolve(kind, reg, uniq, lookup)
        for u, (writer, error) in enumerate(zip(schemas, lookup_errors, strict=True)):
            members = rows[inverse.ravel() == u]
            if writer is None:
                assert error is not None
                for i in members.tolist():
                    failures.append(_copy_error(error, i))
                continue
            if writer not in writers:
                writers.append(writer)
            group[members] = writers.index(writer)
    for i in np.flatnonzero(~(single | confluent)).tolist():
        try:
            parse_header(payloads[i])
            reason = describe_bad_magic(payloads[i])
        except CorruptPayloadError as exc:
            reason = exc.reason
        failures.append(CorruptPayloadError(reason, index=i))

    frames: list[pl.DataFrame] = []
    for g, writer in enumerate(writers):
        for size in (SINGLE_OBJECT_HEADER_SIZE, CONFLUENT_HEADER_SIZE):
            rows = np.flatnonzero((group == g) & (header == size))
            if len(rows):
                frames += _decode_group(
                    writer, reader, buf, starts[rows] + size, lens[rows] - size, size, rows, failures
                )
    out = (
        pl.concat(frames) if frames else pl.DataFrame(schema={**reader.frame_schema, INDEX_COLUMN: pl.Int64})
    )
    if len(frames) > 1:
        out = out.sort(INDEX_COLUMN)
    failures.sort(key=lambda e: e.index or 0)
    if not failures:
        out = out.drop(INDEX_COLUMN)
    errors = [(int(e.index or 0), _reason(e)) for e in failures]
    return DecodeResult(out, errors, failures)


def _decode_group(
    writer: AvroSchema,
    reader: AvroSchema,
    buf: np.ndarray,
    starts: np.ndarray,
    lens: np.ndarray,
    header: int,
    rows: np.ndarray,
    failures: list[SchemaError],
) -> list[pl.DataFrame]:
    """Decode one writer schema's bodies, project them onto the reader, tag rows with input indices."""
    result = decode_bodies(writer, buf, starts, lens, header)
    failures += [CorruptPayloadError(err.reason, index=int(rows[pos])) for pos, err in result.errors]
    return [
        project(frame, reader).with_columns(pl.Series(INDEX_COLUMN, rows[positions], dtype=pl.Int64))
        for frame, positions in zip(result.frames, result.positions, strict=True)
    ]


def _reason(error: SchemaError) -> str:
    return error.reason if isinstance(error, CorruptPayloadError) else str(error)


def _copy_error(error: SchemaError, index: int) -> SchemaError:
    """The lookup error of a distinct key, re-made for one payload (each carries its own index)."""
    copy = type(error).__new__(type(error), *error.args)
    copy.__dict__.update(error.__dict__)
    copy.index = index
    return copy


def decode_payload(
    payload: bytes, *, registry: SchemaRegistry | None = None, kind: str | None = None
) -> tuple[AvroSchema, dict[str, object]]:
    """Decode one payload with fastavro, raising typed errors; for tools and dead letters, not batches.

    Returns:
        The writer schema and the record as Python values (as written: not projected).

    Raises:
        CorruptPayloadError: bad header or undecodable body.
        UnknownSchemaError: the fingerprint or schema id is not registered.
        SchemaMismatchError: ``kind`` is given and the writer schema belongs to another kind.
    """
    reg = registry or default_registry()
    head = parse_header(payload)
    writer = (
        reg.by_fingerprint(head.fingerprint)
        if head.fingerprint is not None
        else reg.by_schema_id(head.schema_id or 0)
    )
    if kind is not None and writer.kind != kind:
        raise SchemaMismatchError(
            f"payload written with {writer}, expected {kind}", expected=kind, found=writer.kind
        )
    return writer, decode_body(writer, bytes(payload[head.size :]))
