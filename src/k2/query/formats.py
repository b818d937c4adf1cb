"""Result encodings shared by the API and the CLI: JSON, CSV, Parquet, Arrow IPC, NDJSON and SSE.

JSON keeps decimals exact by writing them as strings ("36.667000"); doubles (vwap, mid) are
numbers and times are ISO 8601 in UTC. CSV writes nested columns (snapshot offsets) as JSON text.
Parquet and Arrow keep the engine's types unchanged (decimal128(18, 6), timestamp[us, UTC]).
Encoding goes through Polars/PyArrow writers, never a Python loop over rows.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from k2.observability.metrics import REGISTRY, Histogram
from k2.query.errors import InvalidParameterError

__all__ = [
    "ENCODE_SECONDS",
    "FORMATS",
    "MEDIA_TYPES",
    "Format",
    "encode",
    "encode_ndjson",
    "encode_sse",
    "format_for_path",
    "negotiate",
    "write_file",
]

Format = Literal["json", "csv", "parquet", "arrow"]

ENCODE_SECONDS = Histogram(
    "k2_encode_seconds",
    "Encoding one answer (JSON, CSV, Parquet or Arrow IPC)",
    ["format"],
    registry=REGISTRY,
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
FORMATS: tuple[Format, ...] = ("json", "csv", "parquet", "arrow")
MEDIA_TYPES: dict[Format, str] = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
    "arrow": "application/vnd.apache.arrow.stream",
}
_ACCEPT: dict[str, Format] = {
    "application/json": "json",
    "text/csv": "csv",
    "application/vnd.apache.parquet": "parquet",
    "application/x-parquet": "parquet",
    "application/vnd.apache.arrow.stream": "arrow",
    "application/vnd.apache.arrow.file": "arrow",
}
_SUFFIX: dict[str, Format] = {".json": "json", ".csv": "csv", ".parquet": "parquet", ".arrow": "arrow"}


def negotiate(format_param: str | None, accept: str | None) -> Format:
    """The format asked for: ``format=`` wins, then the first supported Accept type, else JSON.

    Raises:
        InvalidParameterError: ``format`` names something else.
    """
    if format_param:
        value = format_param.strip().lower()
        if value not in FORMATS:
            raise InvalidParameterError(
                "format", f"{value[:20]!r} is not a format; use one of {', '.join(FORMATS)}"
            )
        return value
    for part in (accept or "").split(","):
        media = part.split(";", 1)[0].strip().lower()
        if media in _ACCEPT:
            return _ACCEPT[media]
    return "json"


def _frame(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


#: 63-bit ids lose precision as JSON numbers in JavaScript: they travel as strings in JSON.
_ID_COLUMNS = ("snapshot_id", "parent_id")


def _rows_json(table: pa.Table) -> str:
    if table.num_rows == 0:
        return "[]"
    frame = _frame(table)
    ids = [c for c in _ID_COLUMNS if c in frame.columns]
    if ids:
        frame = frame.with_columns(pl.col(ids).cast(pl.String))
    return frame.write_json()


def encode(table: pa.Table, fmt: Format, meta: Mapping[str, Any] | None = None) -> bytes:
    """One result in one format; JSON wraps the rows as ``{"data": [...], "count": n, ...meta}``.

    Snapshot ids are strings in JSON (they exceed JavaScript's exact integers). The time it takes
    is ``k2_encode_seconds{format}``: with ``k2_query_seconds`` and the request's duration it
    splits an answer's latency into query, encoding and the rest.
    """
    started = time.perf_counter()
    try:
        return _encode(table, fmt, meta)
    finally:
        ENCODE_SECONDS.labels(fmt).observe(time.perf_counter() - started)


def _encode(table: pa.Table, fmt: Format, meta: Mapping[str, Any] | None) -> bytes:
    if fmt == "json":
        head = json.dumps({"count": table.num_rows, **(meta or {})}, separators=(",", ":"), default=str)
        return ('{"data":' + _rows_json(table) + "," + head[1:]).encode()
    if fmt == "csv":
        return _csv(table).encode()
    sink = io.BytesIO()
    if fmt == "parquet":
        pq.write_table(table, sink, compression="zstd")
    else:
        with ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    return sink.getvalue()


def _csv(table: pa.Table) -> str:
    frame = _frame(table)
    nested = [name for name, dtype in frame.schema.items() if dtype.is_nested()]
    if nested:
        frame = frame.with_columns(
            pl.Series(name, [json.dumps(v, default=str) for v in frame[name].to_list()]) for name in nested
        )
    return frame.write_csv()


def encode_ndjson(batch: pa.RecordBatch | pa.Table) -> bytes:
    """Rows as newline-delimited JSON (one object per line)."""
    table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
    return _frame(table).write_ndjson().encode() if table.num_rows else b""


def encode_sse(batch: pa.RecordBatch | pa.Table) -> bytes:
    """Rows as server-sent events: ``event: <kind>`` (trade/quote) and ``data: <json>`` per row."""
    text = encode_ndjson(batch).decode()
    table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
    kinds = table.column("kind").to_pylist() if "kind" in table.column_names else ["tick"] * table.num_rows
    lines = text.splitlines()
    return "".join(f"event: {k}\ndata: {line}\n\n" for k, line in zip(kinds, lines, strict=True)).encode()


def format_for_path(path: Path) -> Format:
    """Raises:
    InvalidParameterError: the suffix is not .json, .csv, .parquet or .arrow.
    """
    fmt = _SUFFIX.get(path.suffix.lower())
    if fmt is None:
        raise InvalidParameterError("output", f"{path.name}: use a .json, .csv, .parquet or .arrow file")
    return fmt


def write_file(table: pa.Table, path: Path, meta: Mapping[str, Any] | None = None) -> Format:
    """Write a result to ``path`` in the format its suffix names; returns the format.

    Raises:
        InvalidParameterError: unknown suffix.
    """
    fmt = format_for_path(path)
    path.write_bytes(encode(table, fmt, meta))
    return fmt
