from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from k2.observability.metrics import sample
from k2.query.errors import InvalidParameterError
from k2.query.formats import encode, encode_ndjson, encode_sse, negotiate, write_file

TABLE = pa.table({
    "symbol": ["BHP", "RIO"],
    "exchange_ts": pa.array([datetime(2014, 3, 11, 1, 2, 3, 456000, tzinfo=UTC)] * 2, pa.timestamp("us", "UTC")),
    "price": pa.array([Decimal("36.667"), None], pa.decimal128(18, 6)),
    "snapshot_id": pa.array([5278257869543696240, 1], pa.int64()),
    "offsets": pa.array([[{"topic": "k2.trades", "partition": 0, "offset": 9}], []],
                        pa.list_(pa.struct([("topic", pa.string()), ("partition", pa.int32()), ("offset", pa.int64())]))),
})  # fmt: skip


def test_negotiation() -> None:
    assert negotiate("CSV", "application/json") == "csv"
    assert negotiate(None, "text/html, application/vnd.apache.parquet;q=0.9") == "parquet"
    assert negotiate(None, "application/vnd.apache.arrow.stream") == "arrow"
    assert negotiate(None, "*/*") == "json"
    with pytest.raises(InvalidParameterError, match="format: 'xml' is not a format"):
        negotiate("xml", None)


def test_json_keeps_decimals_exact_and_ids_as_strings() -> None:
    body = json.loads(encode(TABLE, "json", {"next_cursor": None}))
    assert body["count"] == 2 and body["next_cursor"] is None
    assert body["data"][0]["price"] == "36.667000"
    assert body["data"][0]["snapshot_id"] == "5278257869543696240"
    assert body["data"][0]["exchange_ts"].startswith("2014-03-11T01:02:03.456")


def test_binary_formats_round_trip() -> None:
    assert pq.read_table(io.BytesIO(encode(TABLE, "parquet"))).equals(TABLE)
    assert ipc.open_stream(encode(TABLE, "arrow")).read_all().equals(TABLE)
    csv = encode(TABLE, "csv").decode().splitlines()
    assert csv[0] == "symbol,exchange_ts,price,snapshot_id,offsets"
    assert '"k2.trades"' in csv[1]


def test_streams_and_files(tmp_path: Path) -> None:
    lines = encode_ndjson(TABLE).decode().splitlines()
    assert [json.loads(line)["symbol"] for line in lines] == ["BHP", "RIO"]
    sse = encode_sse(TABLE.append_column("kind", pa.array(["trade", "quote"]))).decode()
    assert sse.startswith("event: trade\ndata: {") and sse.count("\n\n") == 2
    assert write_file(TABLE, tmp_path / "x.parquet") == "parquet"
    assert pq.read_table(tmp_path / "x.parquet").num_rows == 2
    with pytest.raises(InvalidParameterError, match=r"use a .json, .csv, .parquet or .arrow file"):
        write_file(TABLE, tmp_path / "x.xlsx")


def test_encoding_time_is_measured_per_format() -> None:
    table = pa.table({"symbol": ["BHP", "RIO"], "price": [1.5, 2.5]})
    for fmt in ("json", "arrow"):
        before = sample("k2_encode_seconds_count", {"format": fmt})
        total = sample("k2_encode_seconds_sum", {"format": fmt})
        encode(table, fmt)
        assert sample("k2_encode_seconds_count", {"format": fmt}) == before + 1
        assert sample("k2_encode_seconds_sum", {"format": fmt}) > total
