"""Errors of the schema registry and the Avro codec.

Every class carries the context needed to route a bad payload (its index in the batch, the
fingerprint or schema id it named) so that the pipeline can dead-letter it without parsing
the message text.
"""

from __future__ import annotations

from k2.errors import K2Error

__all__ = [
    "CorruptPayloadError",
    "EncodeError",
    "IncompatibleSchemaError",
    "SchemaError",
    "SchemaMismatchError",
    "UnknownSchemaError",
]


class SchemaError(K2Error):
    """A schema or a payload does not fit K2's data contract.

    Attributes:
        index: position of the offending payload in its batch, when the error is about one payload.
    """

    index: int | None = None


class UnknownSchemaError(SchemaError):
    """A payload names a writer schema this registry does not know.

    Attributes:
        fingerprint: the 8 fingerprint bytes of a single-object payload (None for Confluent framing).
        schema_id: the Confluent schema id of a Confluent-framed payload (None otherwise).
        index: position of the payload in its batch, when decoding a batch.
    """

    def __init__(
        self,
        message: str,
        *,
        fingerprint: bytes | None = None,
        schema_id: int | None = None,
        index: int | None = None,
    ) -> None:
        super().__init__(message)
        self.fingerprint = fingerprint
        self.schema_id = schema_id
        self.index = index


class CorruptPayloadError(SchemaError):
    """A payload's header or Avro body cannot be decoded.

    Attributes:
        reason: what is wrong, in a few words (also the DLQ reason).
        index: position of the payload in its batch, when decoding a batch.
    """

    def __init__(self, reason: str, *, index: int | None = None) -> None:
        where = f"payload {index}: " if index is not None else ""
        super().__init__(f"{where}{reason}")
        self.reason = reason
        self.index = index


class SchemaMismatchError(SchemaError):
    """A payload is valid but written with another kind's schema (a quote on the trades topic).

    Attributes:
        expected: the kind the caller decodes ("trades").
        found: the kind of the writer schema the payload names.
        index: position of the payload in its batch.
    """

    def __init__(self, message: str, *, expected: str, found: str, index: int | None = None) -> None:
        super().__init__(message)
        self.expected = expected
        self.found = found
        self.index = index


class IncompatibleSchemaError(SchemaError):
    """A writer schema cannot be read as the current (reader) schema of its kind.

    Attributes:
        kind: the stream or reference kind.
        field: the field that breaks compatibility.
    """

    def __init__(self, message: str, *, kind: str, field: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.field = field


class EncodeError(SchemaError):
    """A frame cannot be encoded with its kind's schema (missing column, null in a required field).

    Attributes:
        kind: the kind being encoded.
        column: the offending column.
        row: the first offending row, when one row is to blame.
    """

    def __init__(self, message: str, *, kind: str, column: str, row: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.column = column
        self.row = row
