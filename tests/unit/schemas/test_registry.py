"""The schema registry: built-in versions, fingerprints, Confluent ids and their errors."""

from __future__ import annotations

import json

import fastavro
import pytest
from fastavro.schema import fingerprint, to_parsing_canonical_form

from k2.schemas import (
    KINDS,
    AvroSchema,
    SchemaError,
    UnknownSchemaError,
    builtin_registry,
    default_registry,
)


def test_builtin_registry_has_every_kind_at_version_one() -> None:
    registry = builtin_registry()
    assert set(registry.kinds) == set(KINDS)
    names = {kind: registry.current(kind).name for kind in KINDS}
    assert names == {
        "trades": "k2.Trade",
        "quotes": "k2.Quote",
        "instruments": "k2.Instrument",
        "corporate_actions": "k2.CorporateAction",
    }
    assert all(registry.current(kind).version == 1 for kind in KINDS)


def test_fingerprint_is_fastavros_crc64_of_the_canonical_form() -> None:
    schema = default_registry().current("quotes")
    canonical = to_parsing_canonical_form(fastavro.parse_schema(json.loads(json.dumps(schema.schema))))
    assert schema.canonical == canonical
    assert schema.fingerprint == bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))
    assert '"doc"' not in schema.canonical and "field-id" not in schema.canonical
    assert default_registry().by_fingerprint(schema.fingerprint) is schema
    assert schema.fingerprint_int == int.from_bytes(schema.fingerprint, "little")


def test_unknown_fingerprint_and_kind() -> None:
    registry = builtin_registry()
    with pytest.raises(UnknownSchemaError) as info:
        registry.by_fingerprint(b"\x01" * 8)
    assert info.value.fingerprint == b"\x01" * 8
    with pytest.raises(SchemaError):
        registry.current("options")
    with pytest.raises(SchemaError):
        registry.get("trades", 9)


def test_registering_a_clash_is_refused() -> None:
    registry = builtin_registry()
    doc = dict(registry.current("trades").schema)
    with pytest.raises(SchemaError):
        registry.register(doc)  # same kind and version
    with pytest.raises(SchemaError):
        registry.register({**doc, "k2.version": 5})  # same fingerprint under another version
    with pytest.raises(SchemaError):
        AvroSchema.from_json({k: v for k, v in doc.items() if k != "k2.kind"})


def test_confluent_ids_are_bound_by_the_caller() -> None:
    registry = builtin_registry()
    trades = registry.current("trades")
    assert registry.schema_id(trades) is None
    registry.bind_schema_id(7, trades)
    assert registry.schema_id(trades) == 7 and registry.by_schema_id(7) is trades
    with pytest.raises(SchemaError):
        registry.bind_schema_id(7, registry.current("quotes"))
    with pytest.raises(SchemaError):
        registry.bind_schema_id(-1, registry.current("quotes"))
    with pytest.raises(UnknownSchemaError) as info:
        registry.by_schema_id(8)
    assert info.value.schema_id == 8
    foreign = AvroSchema.from_json(dict(trades.schema))
    with pytest.raises(SchemaError):
        registry.bind_schema_id(9, foreign)  # an equal schema object, but not this registry's


def test_copy_is_independent_and_default_registry_is_shared() -> None:
    original = builtin_registry()
    clone = original.copy()
    doc = {**dict(original.current("instruments").schema), "k2.version": 2}
    doc["fields"] = [*doc["fields"], {"name": "lot", "type": ["null", "long"], "default": None}]
    clone.register(doc)
    assert clone.current("instruments").version == 2
    assert original.current("instruments").version == 1
    assert default_registry() is default_registry()
