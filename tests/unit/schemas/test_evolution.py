"""Schema evolution: old and new writer versions decode together, projected onto the reader."""

from __future__ import annotations

import json
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from k2.schemas import (
    INDEX_COLUMN,
    IncompatibleSchemaError,
    SchemaRegistry,
    builtin_registry,
    decode_batch,
    encode_batch,
)
from k2.schemas.fields import iceberg_schema_of
from tests.unit.schemas.conftest import random_frame


def _trade_v2() -> dict[str, Any]:
    """Trade v1 plus an optional field: a backward- and forward-compatible change."""
    doc = json.loads(json.dumps(builtin_registry().current("trades").schema))
    doc["k2.version"] = 2
    doc["fields"].append(
        {"name": "condition_code", "type": ["null", "string"], "default": None, "field-id": 13}
    )
    return doc


@pytest.fixture
def v2_registry() -> SchemaRegistry:
    registry = builtin_registry()
    registry.register(_trade_v2())
    return registry


def test_v2_becomes_current_and_keeps_v1(v2_registry: SchemaRegistry) -> None:
    current = v2_registry.current("trades")
    assert current.version == 2
    assert list(current.frame_schema)[-1] == "condition_code"
    assert [s.version for s in v2_registry.versions("trades")] == [1, 2]
    assert v2_registry.get("trades", 1).fingerprint != current.fingerprint
    iceberg = {f.name: f.field_id for f in _iceberg(v2_registry).fields}
    assert iceberg["condition_code"] == 13 and iceberg["price"] == 8


def _iceberg(registry: SchemaRegistry) -> Any:
    return iceberg_schema_of(registry.current("trades").fields)


def test_v1_and_v2_payloads_decode_in_one_batch(v2_registry: SchemaRegistry) -> None:
    old = random_frame("trades", 300, seed=1)
    new = random_frame("trades", 300, seed=2).with_columns(
        pl.Series("condition_code", [f"C{i % 7}" if i % 5 else None for i in range(300)])
    )
    v1 = encode_batch("trades", old, registry=v2_registry, version=1)
    v2 = encode_batch("trades", new, registry=v2_registry)
    assert v1[0][2:10] != v2[0][2:10]
    interleaved = [p for pair in zip(v1, v2, strict=True) for p in pair]
    result = decode_batch("trades", interleaved, registry=v2_registry)
    assert result.ok
    assert INDEX_COLUMN not in result.frame.columns
    frame = result.frame
    assert list(frame.schema.items()) == list(v2_registry.current("trades").frame_schema.items())
    assert_frame_equal(frame[0::2].drop("condition_code"), old)
    assert frame[0::2]["condition_code"].null_count() == 300  # the field v1 never had
    assert_frame_equal(frame[1::2], new)


def test_a_v1_reader_drops_the_field_a_v2_writer_added() -> None:
    registry = builtin_registry()
    registry.register(_trade_v2(), current=False)  # v2 is known, but this reader is still on v1
    assert registry.current("trades").version == 1
    new = random_frame("trades", 50, seed=4).with_columns(pl.lit("X").alias("condition_code"))
    payloads = encode_batch("trades", new, registry=registry, version=2)
    result = decode_batch("trades", payloads, registry=registry)
    assert result.ok
    assert_frame_equal(result.frame, new.drop("condition_code"))


def test_a_required_field_without_default_is_incompatible() -> None:
    registry = builtin_registry()
    doc = _trade_v2()
    doc["k2.version"] = 3
    doc["fields"].append({"name": "venue_code", "type": "string", "field-id": 14})
    registry.register(doc)
    v1 = encode_batch("trades", random_frame("trades", 5), registry=registry, version=1)
    result = decode_batch("trades", v1, registry=registry)
    assert [i for i, _ in result.errors] == [0, 1, 2, 3, 4]
    assert all(isinstance(f, IncompatibleSchemaError) for f in result.failures)
    assert result.failures[0].field == "venue_code"  # type: ignore[attr-defined]
    assert result.frame.height == 0
