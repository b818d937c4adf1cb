"""The Polars, Arrow and Iceberg schemas are derived from Avro and match the data contract."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pytest
from pyiceberg.types import DateType, DecimalType, LongType, StringType, TimestamptzType

from k2.schemas import SchemaError, arrow_schema, frame_schema, iceberg_schema
from k2.schemas.fields import parse_fields

DEC = pl.Decimal(18, 6)
UTC_US = pl.Datetime("us", "UTC")
COMMON = [
    ("message_id", pl.String),
    ("exchange", pl.String),
    ("symbol", pl.String),
    ("session", pl.Date),
    ("sequence", pl.Int64),
    ("exchange_ts", UTC_US),
    ("ingest_ts", UTC_US),
]
CONTRACT = {
    "trades": [
        *COMMON,
        ("price", DEC),
        ("size", DEC),
        ("trade_id", pl.String),
        ("qualifiers", pl.String),
        ("venue", pl.String),
    ],
    "quotes": [*COMMON, ("bid_price", DEC), ("ask_price", DEC), ("bid_size", DEC), ("ask_size", DEC)],
}


@pytest.mark.parametrize("kind", ["trades", "quotes"])
def test_frame_schema_is_the_contract_in_order(kind: str) -> None:
    assert list(frame_schema(kind).items()) == CONTRACT[kind]


def test_frame_schema_returns_a_copy() -> None:
    frame_schema("trades").clear()
    assert len(frame_schema("trades")) == 12


def test_reference_frame_schemas() -> None:
    assert frame_schema("instruments") == {
        "exchange": pl.String,
        "symbol": pl.String,
        "isin": pl.String,
        "name": pl.String,
        "listing_start": pl.Date,
        "listing_end": pl.Date,
    }
    actions = frame_schema("corporate_actions")
    assert actions["kind"] == pl.Enum(["dividend", "split", "merger"])
    assert (actions["ex_date"], actions["value"], actions["details"]) == (pl.Date, DEC, pl.String)


def test_iceberg_schema_ids_types_and_required() -> None:
    schema = iceberg_schema("trades")
    assert [f.field_id for f in schema.fields] == list(range(1, 13))
    by_name = {f.name: f for f in schema.fields}
    assert by_name["exchange_ts"].field_type == TimestamptzType()
    assert by_name["price"].field_type == DecimalType(18, 6)
    assert by_name["session"].field_type == DateType()
    assert by_name["sequence"].field_type == LongType()
    assert by_name["venue"].field_type == StringType()
    assert [f.name for f in schema.fields if not f.required] == ["trade_id", "qualifiers", "venue"]
    assert all(f.required for f in iceberg_schema("quotes").fields)
    actions = {f.name: f for f in iceberg_schema("corporate_actions").fields}
    assert actions["kind"].field_type == StringType() and actions["kind"].required
    assert not actions["value"].required


def test_arrow_schema_matches_what_polars_exports() -> None:
    schema = arrow_schema("trades")
    assert schema.field("price").type == pa.decimal128(18, 6)
    assert schema.field("exchange_ts").type == pa.timestamp("us", tz="UTC")
    assert schema.field("session").type == pa.date32()
    assert not schema.field("symbol").nullable and schema.field("venue").nullable
    assert schema.field("sequence").metadata == {b"PARQUET:field_id": b"5"}
    exported = pl.DataFrame(schema=frame_schema("trades")).to_arrow().schema
    assert exported.remove_metadata().types == pa.schema(list(schema)).types


def test_unsupported_avro_types_are_refused_at_parse_time() -> None:
    for bad in (
        {"type": "array", "items": "long"},
        {"type": "bytes", "logicalType": "decimal", "precision": 30},
        ["null", "string", "long"],
        {"type": "long", "logicalType": "timestamp-nanos"},
    ):
        with pytest.raises(SchemaError):
            parse_fields({"type": "record", "name": "X", "fields": [{"name": "f", "type": bad}]})
    with pytest.raises(SchemaError):
        parse_fields({"type": "enum", "name": "E", "symbols": ["a"]})
    with pytest.raises(SchemaError):
        parse_fields({"type": "record", "name": "X", "fields": [{"name": "a", "type": "long"}] * 2})


def test_field_ids_default_to_position_and_unions_may_put_null_second() -> None:
    (a, b) = parse_fields(
        {
            "type": "record",
            "name": "X",
            "fields": [{"name": "a", "type": "long"}, {"name": "b", "type": ["string", "null"]}],
        }
    )
    assert (a.field_id, b.field_id) == (1, 2)
    assert b.nullable and b.null_branch == 1 and b.value_branch == 0
