"""Versioned Avro schemas, known by kind, version, fingerprint and (optionally) Confluent id.

The registry is what makes schema evolution work on the wire: a payload names its writer schema
by fingerprint, the registry finds that exact version (older ones included), and the decoder
projects it onto the kind's current version. Built-in schemas live as ``avro/<name>.v<N>.avsc``
files in this package, each carrying ``k2.kind`` and ``k2.version`` attributes.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import fastavro
import polars as pl
from fastavro.schema import fingerprint as avro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from k2.schemas.errors import IncompatibleSchemaError, SchemaError, UnknownSchemaError
from k2.schemas.fields import FieldSpec, frame_schema_of, parse_fields

__all__ = ["AvroSchema", "SchemaRegistry", "builtin_registry", "default_registry"]


@dataclass(frozen=True, eq=False)
class AvroSchema:
    """One version of one kind's Avro schema, with everything derived from it computed once.

    Attributes:
        kind: "trades", "quotes", "instruments" or "corporate_actions".
        version: 1, 2, … (higher is newer).
        schema: the schema as JSON data.
        fields: the parsed fields, in order.
        canonical: Avro Parsing Canonical Form (logical types and docs are not part of it).
        fingerprint: CRC-64-AVRO of the canonical form, as the 8 little-endian bytes on the wire.
    """

    kind: str
    version: int
    schema: Mapping[str, Any]
    fields: tuple[FieldSpec, ...]
    canonical: str
    fingerprint: bytes
    parsed: Any = field(repr=False)

    @classmethod
    def from_json(
        cls, schema: Mapping[str, Any] | str, *, kind: str | None = None, version: int | None = None
    ) -> AvroSchema:
        """Parse a record schema; kind and version default to its ``k2.kind`` / ``k2.version``.

        Raises:
            SchemaError: the schema is invalid, lacks a kind or version, or uses unsupported types.
        """
        data: dict[str, Any] = json.loads(schema) if isinstance(schema, str) else copy.deepcopy(dict(schema))
        kind = kind or data.get("k2.kind")
        version = version if version is not None else data.get("k2.version")
        if not kind or version is None:
            raise SchemaError(f"schema {data.get('name')!r} needs a kind and a version (k2.kind, k2.version)")
        fields = parse_fields(data)
        try:
            parsed = fastavro.parse_schema(copy.deepcopy(data), named_schemas={})
            canonical = to_parsing_canonical_form(parsed)
        except Exception as exc:
            raise SchemaError(f"invalid Avro schema {data.get('name')!r}: {exc}") from exc
        fp = bytes.fromhex(avro_fingerprint(canonical, "CRC-64-AVRO"))
        return cls(str(kind), int(version), data, fields, canonical, fp, parsed)

    @property
    def name(self) -> str:
        """Full record name, e.g. ``k2.Trade``."""
        namespace = self.schema.get("namespace")
        name = str(self.schema["name"])
        return f"{namespace}.{name}" if namespace and "." not in name else name

    @property
    def fingerprint_int(self) -> int:
        """The fingerprint as the unsigned integer a little-endian uint64 view of the wire bytes gives."""
        return int.from_bytes(self.fingerprint, "little")

    @functools.cached_property
    def frame_schema(self) -> dict[str, pl.DataType]:
        return frame_schema_of(self.fields)

    def field(self, name: str) -> FieldSpec | None:
        return next((f for f in self.fields if f.name == name), None)

    def __str__(self) -> str:
        return f"{self.name} v{self.version} ({self.fingerprint.hex()})"


class SchemaRegistry:
    """Known writer schemas of every kind; the highest version of a kind is its reader schema."""

    def __init__(self, schemas: Iterable[AvroSchema] = ()) -> None:
        self._by_fp: dict[bytes, AvroSchema] = {}
        self._by_kind: dict[str, dict[int, AvroSchema]] = {}
        self._current: dict[str, AvroSchema] = {}
        self._by_id: dict[int, AvroSchema] = {}
        self._ids: dict[bytes, int] = {}
        for schema in schemas:
            self.add(schema)

    def add(self, schema: AvroSchema, *, current: bool | None = None) -> AvroSchema:
        """Register a parsed schema version.

        Args:
            schema: the version to add.
            current: make it the kind's reader schema; by default the highest version is current.

        Raises:
            SchemaError: another schema already has this kind and version, or its fingerprint.
        """
        versions = self._by_kind.setdefault(schema.kind, {})
        if schema.version in versions or schema.fingerprint in self._by_fp:
            clash = versions.get(schema.version) or self._by_fp[schema.fingerprint]
            raise SchemaError(f"{schema} clashes with the registered {clash}")
        versions[schema.version] = schema
        self._by_fp[schema.fingerprint] = schema
        cur = self._current.get(schema.kind)
        if current or (current is None and (cur is None or schema.version > cur.version)):
            self._current[schema.kind] = schema
        return schema

    def register(
        self,
        schema: Mapping[str, Any] | str,
        *,
        kind: str | None = None,
        version: int | None = None,
        current: bool | None = None,
    ) -> AvroSchema:
        """Parse and add a schema given as JSON data or text (see ``AvroSchema.from_json``).

        Raises:
            SchemaError: the schema is invalid or clashes with a registered one.
        """
        return self.add(AvroSchema.from_json(schema, kind=kind, version=version), current=current)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self._by_kind)

    def current(self, kind: str) -> AvroSchema:
        """The reader (newest) schema of a kind.

        Raises:
            SchemaError: the kind is unknown.
        """
        try:
            return self._current[kind]
        except KeyError:
            raise SchemaError(f"unknown kind {kind!r}; known: {', '.join(self._by_kind)}") from None

    def versions(self, kind: str) -> list[AvroSchema]:
        """Every registered version of a kind, oldest first."""
        return [s for _, s in sorted(self._by_kind.get(kind, {}).items())]

    def get(self, kind: str, version: int) -> AvroSchema:
        """One version of a kind.

        Raises:
            SchemaError: no such kind or version.
        """
        try:
            return self._by_kind[kind][version]
        except KeyError:
            raise SchemaError(f"no schema {kind!r} version {version}") from None

    def by_fingerprint(self, fingerprint: bytes) -> AvroSchema:
        """The writer schema a single-object payload names.

        Raises:
            UnknownSchemaError: no registered schema has this fingerprint.
        """
        try:
            return self._by_fp[bytes(fingerprint)]
        except KeyError:
            raise UnknownSchemaError(
                f"unknown writer schema fingerprint {bytes(fingerprint).hex()}",
                fingerprint=bytes(fingerprint),
            ) from None

    def bind_schema_id(self, schema_id: int, schema: AvroSchema) -> None:
        """Record the Confluent schema-registry id of a registered schema.

        K2 has no schema-registry client: whoever registered the schema with the registry server
        passes its id here, and Confluent-framed payloads are then encoded and decoded with it.

        Raises:
            SchemaError: the schema is not registered here, or the id is out of range or taken.
        """
        if self._by_fp.get(schema.fingerprint) is not schema:
            raise SchemaError(f"{schema} is not registered")
        if not 0 <= schema_id < 2**32:
            raise SchemaError(f"Confluent schema id {schema_id} is not an unsigned 32-bit integer")
        bound = self._by_id.get(schema_id)
        if bound is not None and bound is not schema:
            raise SchemaError(f"schema id {schema_id} is already bound to {bound}")
        self._by_id[schema_id] = schema
        self._ids[schema.fingerprint] = schema_id

    def schema_id(self, schema: AvroSchema) -> int | None:
        """The Confluent id bound to a schema, if any."""
        return self._ids.get(schema.fingerprint)

    def by_schema_id(self, schema_id: int) -> AvroSchema:
        """The writer schema a Confluent-framed payload names.

        Raises:
            UnknownSchemaError: no schema is bound to this id.
        """
        try:
            return self._by_id[schema_id]
        except KeyError:
            raise UnknownSchemaError(
                f"unknown Confluent schema id {schema_id}", schema_id=schema_id
            ) from None

    def check_readable(self, writer: AvroSchema) -> AvroSchema:
        """The reader schema for a writer's kind, after checking the writer can be projected onto it.

        Rules (Avro schema resolution, restricted to what the codec projects): every reader field the
        writer lacks must have a default; a shared field keeps its Polars dtype, except that a
        nullable reader field accepts a required writer field. Writer-only fields are dropped.

        Raises:
            IncompatibleSchemaError: a field breaks these rules.
        """
        reader = self.current(writer.kind)
        if reader is writer:
            return reader
        for spec in reader.fields:
            old = writer.field(spec.name)
            if old is None:
                if not (spec.has_default and spec.nullable):
                    raise IncompatibleSchemaError(
                        f"{writer} lacks {spec.name}, which {reader} requires without a null default",
                        kind=writer.kind,
                        field=spec.name,
                    )
            elif old.nullable and not spec.nullable:
                raise IncompatibleSchemaError(
                    f"{spec.name} is nullable in {writer} but required in {reader}",
                    kind=writer.kind,
                    field=spec.name,
                )
            elif writer.frame_schema[spec.name] != reader.frame_schema[spec.name] and not (
                old.base == "enum" and spec.base == "enum" and set(old.symbols) <= set(spec.symbols)
            ):
                raise IncompatibleSchemaError(
                    f"{spec.name} changes type between {writer} and {reader}",
                    kind=writer.kind,
                    field=spec.name,
                )
        return reader

    def copy(self) -> SchemaRegistry:
        """An independent registry with the same schemas, ids and current versions."""
        clone = SchemaRegistry()
        clone._by_fp = dict(self._by_fp)
        clone._by_kind = {k: dict(v) for k, v in self._by_kind.items()}
        clone._current = dict(self._current)
        clone._by_id = dict(self._by_id)
        clone._ids = dict(self._ids)
        return clone


def builtin_registry() -> SchemaRegistry:
    """A new registry holding every schema version shipped in ``k2/schemas/avro``.

    Raises:
        SchemaError: a shipped schema is invalid (a packaging bug).
    """
    registry = SchemaRegistry()
    folder = resources.files("k2.schemas").joinpath("avro")
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".avsc"):
            registry.register(entry.read_text(encoding="utf-8"))
    return registry


@functools.cache
def default_registry() -> SchemaRegistry:
    """The shared registry of built-in schemas, built on first use (never at import).

    Treat it as read-only: to add versions or Confluent ids, work on ``default_registry().copy()``
    or ``builtin_registry()`` and pass that registry to the codec.
    """
    return builtin_registry()
