"""encode_batch against fastavro, byte for byte, at every field's edges and on random rows."""

from __future__ import annotations

import fastavro.schema
import polars as pl
import pytest

from k2.schemas import KINDS, EncodeError, SchemaError, avro_schema, encode_batch
from tests.unit.schemas.conftest import edge_trades, fastavro_payload, fastavro_record, random_frame


@pytest.mark.parametrize("kind", KINDS)
def test_random_rows_match_fastavro_byte_for_byte(kind: str) -> None:
    frame = random_frame(kind, 1_500, seed=7)
    schema = avro_schema(kind)
    payloads = encode_batch(kind, frame)
    assert len(payloads) == frame.height
    for record, payload in zip(frame.to_dicts(), payloads, strict=True):
        assert payload == fastavro_payload(schema, record)


def test_edge_values_match_fastavro_and_decode_back() -> None:
    frame = edge_trades()
    schema = avro_schema("trades")
    payloads = encode_batch("trades", frame)
    for record, payload in zip(frame.to_dicts(), payloads, strict=True):
        assert payload == fastavro_payload(schema, record)
        assert fastavro_record(schema, payload) == record


def test_several_chunks_keep_row_order() -> None:
    frame = random_frame("quotes", 20_000, seed=3)  # more rows than one encoding chunk
    payloads = encode_batch("quotes", frame)
    schema = avro_schema("quotes")
    for i in (0, 8_191, 8_192, 16_384, 19_999):
        assert fastavro_record(schema, payloads[i])["message_id"] == frame["message_id"][i]


def test_header_is_magic_and_little_endian_fingerprint() -> None:
    (payload,) = encode_batch("trades", edge_trades().head(1))
    schema = avro_schema("trades")
    assert payload[:2] == b"\xc3\x01"
    assert payload[2:10] == schema.fingerprint
    assert payload[2:10].hex() == fastavro.schema.fingerprint(schema.canonical, "CRC-64-AVRO")


def test_confluent_framing_uses_the_given_id() -> None:
    frame = edge_trades().head(3)
    single = encode_batch("trades", frame)
    confluent = encode_batch("trades", frame, schema_id=0x01020304)
    for a, b in zip(single, confluent, strict=True):
        assert b[:5] == b"\x00\x01\x02\x03\x04"
        assert a[10:] == b[5:]
    with pytest.raises(SchemaError):
        encode_batch("trades", frame, schema_id=2**32)


def test_column_order_extra_columns_and_castable_dtypes_are_accepted() -> None:
    frame = edge_trades().filter(pl.col("exchange_ts").dt.year() < 2200)  # ns range ends in 2262
    shuffled = frame.select(reversed(frame.columns)).with_columns(
        pl.col("price").cast(pl.Decimal(24, 6)),
        pl.lit(1).alias("unrelated"),
        pl.col("exchange_ts").dt.cast_time_unit("ns"),
    )
    assert encode_batch("trades", shuffled) == encode_batch("trades", frame)


def test_missing_nullable_columns_encode_as_null() -> None:
    frame = edge_trades().drop("trade_id", "qualifiers", "venue")
    payloads = encode_batch("trades", frame)
    record = fastavro_record(avro_schema("trades"), payloads[0])
    assert (record["trade_id"], record["qualifiers"], record["venue"]) == (None, None, None)


def test_missing_required_column_names_it() -> None:
    with pytest.raises(EncodeError) as info:
        encode_batch("trades", edge_trades().drop("price"))
    assert info.value.column == "price"
    assert info.value.kind == "trades"


def test_null_in_required_column_names_column_and_row() -> None:
    frame = edge_trades().with_columns(
        pl.when(pl.int_range(pl.len()) == 4).then(None).otherwise(pl.col("symbol")).alias("symbol")
    )
    with pytest.raises(EncodeError) as info:
        encode_batch("trades", frame)
    assert (info.value.column, info.value.row) == ("symbol", 4)


def test_uncastable_column_is_an_encode_error() -> None:
    frame = edge_trades().with_columns(pl.lit("not a number").alias("sequence"))
    with pytest.raises(EncodeError) as info:
        encode_batch("trades", frame)
    assert info.value.column == "sequence"


def test_empty_frame_encodes_to_nothing_and_unknown_kind_fails() -> None:
    assert encode_batch("trades", edge_trades().head(0)) == []
    with pytest.raises(SchemaError):
        encode_batch("options", edge_trades())
