"""decode_batch: round trips, typed errors for bad payloads, and the silent-misparse guard."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from k2.schemas import (
    INDEX_COLUMN,
    KINDS,
    CorruptPayloadError,
    SchemaMismatchError,
    SchemaRegistry,
    UnknownSchemaError,
    avro_schema,
    builtin_registry,
    decode_batch,
    decode_payload,
    encode_batch,
)
from tests.unit.schemas.conftest import edge_trades, fastavro_record, random_frame


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_every_kind(kind: str) -> None:
    frame = random_frame(kind, 3_000, seed=11)
    result = decode_batch(kind, encode_batch(kind, frame))
    assert result.ok and result.errors == [] and result.failures == []
    assert_frame_equal(result.frame, frame)
    assert list(result.frame.schema.items()) == list(avro_schema(kind).frame_schema.items())


def test_round_trip_edge_values() -> None:
    frame = edge_trades()
    result = decode_batch("trades", encode_batch("trades", frame))
    assert_frame_equal(result.frame, frame)
    assert result.indices.tolist() == list(range(frame.height))


def test_empty_batch_has_the_schema() -> None:
    result = decode_batch("quotes", [])
    assert result.frame.height == 0 and result.frame.schema == pl.Schema(avro_schema("quotes").frame_schema)


def _bad_batch() -> tuple[pl.DataFrame, list[bytes], dict[int, type]]:
    frame = random_frame("trades", 400, seed=5)
    payloads = encode_batch("trades", frame)
    quote = encode_batch("quotes", random_frame("quotes", 1))[0]
    bad = {
        3: payloads[3] + b"\x02",  # one stray byte: would shift every following record
        50: payloads[50][:-2],  # truncated body
        51: b"",  # empty
        52: b"\xc3\x01\x00",  # truncated header
        120: b"\xc3\x01" + b"\xee" * 8 + payloads[120][10:],  # unknown fingerprint
        121: b"garbage that is not avro",
        200: quote,  # valid, but a quote on the trades stream
        201: b"\x00\x00\x00\x00\x07" + payloads[201][10:],  # Confluent id nobody bound
        399: payloads[399][:10],  # header only
    }
    types = {
        3: CorruptPayloadError,
        50: CorruptPayloadError,
        51: CorruptPayloadError,
        52: CorruptPayloadError,
        120: UnknownSchemaError,
        121: CorruptPayloadError,
        200: SchemaMismatchError,
        201: UnknownSchemaError,
        399: CorruptPayloadError,
    }
    for i, value in bad.items():
        payloads[i] = value
    return frame, payloads, types


def test_bad_payloads_are_reported_with_index_and_type_and_the_rest_decoded() -> None:
    frame, payloads, types = _bad_batch()
    result = decode_batch("trades", payloads)
    assert [i for i, _ in result.errors] == sorted(types)
    assert [e.index for e in result.failures] == sorted(types)
    for failure in result.failures:
        assert type(failure) is types[failure.index]
    assert all(reason for _, reason in result.errors)
    keep = [i for i in range(frame.height) if i not in types]
    assert result.frame[INDEX_COLUMN].to_list() == keep
    assert_frame_equal(result.frame.drop(INDEX_COLUMN), frame[keep])
    unknown = next(f for f in result.failures if f.index == 120)
    assert isinstance(unknown, UnknownSchemaError) and unknown.fingerprint == b"\xee" * 8
    confluent = next(f for f in result.failures if f.index == 201)
    assert isinstance(confluent, UnknownSchemaError) and confluent.schema_id == 7
    with pytest.raises(CorruptPayloadError) as info:
        result.raise_first()
    assert info.value.index == 3


def _counters_registry() -> SchemaRegistry:
    registry = builtin_registry()
    registry.register(
        {
            "type": "record",
            "name": "Counter",
            "namespace": "k2.test",
            "k2.kind": "counters",
            "k2.version": 1,
            "fields": [{"name": "a", "type": "long"}, {"name": "b", "type": "long"}],
        }
    )
    return registry


@pytest.mark.parametrize("stray", [b"\x04", b"\x02\x02"])
def test_stray_bytes_never_shift_other_rows(stray: bytes) -> None:
    # With only longs, Polars alone reads such a batch "successfully" with shifted values.
    registry = _counters_registry()
    frame = pl.DataFrame({"a": np.arange(1_000), "b": -np.arange(1_000)})
    payloads = encode_batch("counters", frame, registry=registry)
    payloads[10] += stray
    payloads[500] += stray
    result = decode_batch("counters", payloads, registry=registry)
    assert [i for i, _ in result.errors] == [10, 500]
    assert "stray" in result.errors[0][1]
    keep = [i for i in range(1_000) if i not in (10, 500)]
    assert_frame_equal(result.frame.drop(INDEX_COLUMN), frame[keep])


def test_many_scattered_bad_payloads() -> None:
    frame = random_frame("quotes", 2_000, seed=8)
    payloads = encode_batch("quotes", frame)
    rng = np.random.default_rng(1)
    bad = sorted(set(rng.integers(0, 2_000, 40).tolist()))
    for i in bad:
        payloads[i] = payloads[i][: len(payloads[i]) // 2]
    result = decode_batch("quotes", payloads)
    assert [i for i, _ in result.errors] == bad
    assert result.frame.height == 2_000 - len(bad)
    keep = [i for i in range(2_000) if i not in bad]
    assert_frame_equal(result.frame.drop(INDEX_COLUMN), frame[keep])


def test_confluent_framing_round_trip_and_mixed_with_single_object() -> None:
    registry = builtin_registry()
    registry.bind_schema_id(42, registry.current("trades"))
    frame = edge_trades()
    single = encode_batch("trades", frame, registry=registry)
    confluent = encode_batch("trades", frame, registry=registry, schema_id=42)
    mixed = [confluent[i] if i % 3 else single[i] for i in range(frame.height)]
    for payloads in (confluent, mixed):
        result = decode_batch("trades", payloads, registry=registry)
        assert result.ok
        assert_frame_equal(result.frame, frame)


def test_decode_payload_raises_typed_errors() -> None:
    payload = encode_batch("trades", edge_trades().head(1))[0]
    writer, record = decode_payload(payload)
    assert writer is avro_schema("trades") and record == fastavro_record(writer, payload)
    with pytest.raises(UnknownSchemaError) as unknown:
        decode_payload(b"\xc3\x01" + bytes(8) + payload[10:])
    assert unknown.value.fingerprint == bytes(8)
    with pytest.raises(CorruptPayloadError) as corrupt:
        decode_payload(payload[:-1])
    assert corrupt.value.reason
    with pytest.raises(CorruptPayloadError):
        decode_payload(b"")
    with pytest.raises(SchemaMismatchError) as mismatch:
        decode_payload(payload, kind="quotes")
    assert (mismatch.value.expected, mismatch.value.found) == ("quotes", "trades")


def test_reader_fields_are_in_contract_order_even_if_a_writer_reorders_them() -> None:
    registry = builtin_registry()
    doc = json.loads(json.dumps(registry.current("quotes").schema))
    doc["fields"] = list(reversed(doc["fields"]))
    doc["k2.version"] = 0  # an older writer with another field order
    registry.register(doc)
    frame = random_frame("quotes", 30)
    old = encode_batch("quotes", frame, registry=registry, version=0)
    assert old != encode_batch("quotes", frame, registry=registry)
    result = decode_batch("quotes", old, registry=registry)
    assert_frame_equal(result.frame, frame)


@pytest.mark.parametrize("kind", KINDS)
def test_rows_next_to_a_bad_payload_decode_through_the_fallback_path(kind: str) -> None:
    # Bisection hands the neighbours of a bad payload to fastavro: its values must come out the same.
    frame = random_frame(kind, 64, seed=21)
    payloads = encode_batch(kind, frame)
    payloads[30] = payloads[30][:12]
    result = decode_batch(kind, payloads)
    assert [i for i, _ in result.errors] == [30]
    keep = [i for i in range(64) if i != 30]
    assert_frame_equal(result.frame.drop(INDEX_COLUMN), frame[keep])


@pytest.mark.parametrize("kind", KINDS)
def test_tiny_batches_decoded_per_record_match_the_block_path(kind: str) -> None:
    # Up to 8 payloads are decoded by fastavro, one by one, then framed: same frame as Polars gives.
    frame = random_frame(kind, 8, seed=5)
    result = decode_batch(kind, encode_batch(kind, frame))
    assert result.ok
    assert_frame_equal(result.frame, frame)


def test_a_large_batch_read_in_parallel_blocks_keeps_input_order() -> None:
    frame = random_frame("trades", 60_000, seed=5)  # above the block size: read on two threads
    result = decode_batch("trades", encode_batch("trades", frame))
    assert result.ok
    assert_frame_equal(result.frame, frame)


def test_bad_payloads_on_both_sides_of_a_block_boundary() -> None:
    frame = random_frame("trades", 60_000, seed=6)
    payloads = encode_batch("trades", frame)
    bad = [3, 29_999, 30_000, 30_001, 59_999]  # two blocks of 30,000: around the cut and at the ends
    for i in bad:
        payloads[i] = payloads[i][:-3]
    result = decode_batch("trades", payloads)
    assert [i for i, _ in result.errors] == bad
    keep = [i for i in range(60_000) if i not in bad]
    assert_frame_equal(result.frame.drop(INDEX_COLUMN), frame[keep])
