"""Frame builders for the schema tests: random rows of any kind, and hand-picked edge rows."""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import fastavro
import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from k2.schemas import AvroSchema, avro_schema

_TEXT = ["", "ASX", "BHP", "Ωmega", "日本語", "emoji 🚀", "x" * 130, "tab\tand\nnewline", "ü" * 70]


def decimals(unscaled: np.ndarray, null: np.ndarray | None = None) -> pl.Series:
    """A Decimal(18, 6) series from unscaled int64 values, built through Arrow (exact, fast)."""
    u = np.asarray(unscaled, dtype=np.int64)
    words = np.empty((len(u), 2), dtype=np.int64)
    words[:, 0], words[:, 1] = u, u >> 63
    mask = None if null is None else pa.py_buffer(np.packbits(~null, bitorder="little").tobytes())
    arr = pa.Array.from_buffers(pa.decimal128(18, 6), len(u), [mask, pa.py_buffer(words.tobytes())])
    return pl.Series(pl.from_arrow(arr))


def random_frame(kind: str, n: int, seed: int = 0, *, nulls: bool = True) -> pl.DataFrame:
    """Rows of ``kind`` with values spread over each type's whole range (nulls where allowed)."""
    rng = np.random.default_rng(seed)
    schema = avro_schema(kind)
    columns: dict[str, pl.Series] = {}
    for spec in schema.fields:
        dtype = schema.frame_schema[spec.name]
        null = (rng.random(n) < 0.25) if (spec.nullable and nulls) else np.zeros(n, dtype=bool)
        if spec.name == "message_id":
            values: Any = [f"{v:032x}" for v in rng.integers(0, 2**62, n)]
        elif dtype == pl.String:
            values = [_TEXT[i] for i in rng.integers(0, len(_TEXT), n)]
        elif dtype == pl.Date:
            values = pl.Series(rng.integers(-25_000, 2_900_000, n).astype(np.int32)).cast(pl.Date)
        elif dtype == pl.Int64:
            values = rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64, endpoint=True)
            values[: min(n, 4)] = [0, -1, 2**63 - 1, -(2**63)][: min(n, 4)]
        elif isinstance(dtype, pl.Datetime):
            values = pl.Series(rng.integers(-2_208_988_800_000_000, 7_258_118_400_000_000, n)).cast(dtype)
        elif isinstance(dtype, pl.Decimal):
            scale = 10.0 ** rng.integers(0, 19, n)
            values = decimals(
                (rng.uniform(-1, 1, n) * scale).astype(np.int64).clip(-(10**18) + 1, 10**18 - 1)
            )
        elif isinstance(dtype, pl.Enum):
            values = [dtype.categories[int(i)] for i in rng.integers(0, len(dtype.categories), n)]
        else:
            raise AssertionError(f"no generator for {dtype}")
        series = pl.Series(spec.name, values).cast(dtype)
        if null.any():
            series = pl.select(pl.when(pl.lit(pl.Series(null))).then(None).otherwise(series).alias(spec.name))
            series = series.to_series()
        columns[spec.name] = series
    return pl.DataFrame(columns).select([pl.col(c).cast(t) for c, t in schema.frame_schema.items()])


MAX = Decimal("999999999999.999999")


def edge_trades() -> pl.DataFrame:
    """Hand-picked trades at the edges of every field's encoding."""
    unscaled = [
        0,
        1,
        -1,
        127,
        128,
        -128,
        -129,
        255,
        256,
        32767,
        32768,
        -32768,
        -32769,
        2**31,
        -(2**31),
        2**55,
        -(2**55),
        10**18 - 1,
        -(10**18) + 1,
        123_456,
    ]
    n = len(unscaled)
    stamps = [
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2014, 3, 10, 10, 0, 0, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(1900, 1, 1, tzinfo=UTC),
    ]
    sessions = [date(1970, 1, 1), date(1969, 12, 31), date(2014, 3, 10), date(9999, 12, 31), date(1900, 1, 1)]
    text = [None, "", "ASCII", "Ωé日本🚀", "y" * 200]
    return pl.DataFrame(
        {
            "message_id": [f"{i:032x}" for i in range(n)],
            "exchange": ["ASX", "SIM", "Ω", "x" * 64] * (n // 4),
            "symbol": ["BHP", "RIO", "", "日本"] * (n // 4),
            "session": [sessions[i % 5] for i in range(n)],
            "sequence": [1, 0, 2**63 - 1, -(2**63), 63, 64, -64, -65, 2**31, 2**32] * 2,
            "exchange_ts": [stamps[i % 5] for i in range(n)],
            "ingest_ts": [stamps[(i + 2) % 5] for i in range(n)],
            "price": decimals(np.array(unscaled)),
            "size": decimals(-np.array(unscaled)),
            "trade_id": [text[i % 5] for i in range(n)],
            "qualifiers": [text[(i + 1) % 5] for i in range(n)],
            "venue": [text[(i + 3) % 5] for i in range(n)],
        }
    ).select([pl.col(c).cast(t) for c, t in avro_schema("trades").frame_schema.items()])


def fastavro_payload(schema: AvroSchema, record: dict[str, Any]) -> bytes:
    """The reference encoding: fastavro's schemaless writer behind a single-object header."""
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema.parsed, record)
    return b"\xc3\x01" + schema.fingerprint + out.getvalue()


def fastavro_record(schema: AvroSchema, payload: bytes, header: int = 10) -> Any:
    stream = io.BytesIO(payload[header:])
    record = fastavro.schemaless_reader(stream, schema.parsed, None)
    assert stream.tell() == len(payload) - header, "fastavro left bytes unread"
    return record


@pytest.fixture
def frames() -> Callable[..., pl.DataFrame]:
    return random_frame
