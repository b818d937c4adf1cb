"""Arrow IPC bodies and NDJSON lines into the frame type the caller asked for."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Literal

import pyarrow as pa
import pyarrow.ipc as ipc

__all__ = ["LineBatcher", "Output", "convert", "read_arrow", "rows_to_frame"]

#: What a call returns: a polars DataFrame (default), a pandas DataFrame or a pyarrow Table.
Output = Literal["polars", "pandas", "arrow"]


def read_arrow(body: bytes) -> pa.Table:
    """One response body (an Arrow IPC stream) as a table; zero-copy over the bytes."""
    with ipc.open_stream(pa.BufferReader(body)) as reader:
        return reader.read_all()


def convert(table: pa.Table, output: Output) -> Any:
    """The table as the caller's frame type (polars is zero-copy for most columns)."""
    if output == "arrow":
        return table
    if output == "pandas":
        return table.to_pandas()
    import polars as pl

    return pl.from_arrow(table)


def rows_to_frame(lines: Iterable[str], output: Output) -> Any:
    """NDJSON lines (replay, stream) as one frame."""
    rows = [json.loads(line) for line in lines if line.strip()]
    return convert(pa.Table.from_pylist(rows), output)


class LineBatcher:
    """NDJSON lines in, frames of ``batch_rows`` (or one dict per line, ``rows=True``) out.

    Shared by the sync and async clients, whose loops differ only in ``for`` and ``async for``.
    """

    def __init__(self, output: Output, batch_rows: int, rows: bool) -> None:
        self.output, self.batch_rows, self.rows = output, batch_rows, rows
        self._batch: list[str] = []

    def feed(self, line: str) -> list[Any]:
        """What is ready after this line: nothing, one dict, or one full frame."""
        if not line:
            return []
        if self.rows:
            return [json.loads(line)]
        self._batch.append(line)
        if len(self._batch) < self.batch_rows:
            return []
        return self.flush()

    def flush(self) -> list[Any]:
        """The last, partial frame (if any)."""
        batch, self._batch = self._batch, []
        return [rows_to_frame(batch, self.output)] if batch else []
