"""The blocking client: frames for tables, iterators for pages, replays and live streams."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Self

import httpx
import pyarrow as pa

from k2.client.calls import Call
from k2.client.errors import ClientConnectionError, RateLimitError
from k2.client.frames import LineBatcher, Output, convert, read_arrow
from k2.client.routes import Routes
from k2.client.wire import DEFAULT_URL, SseParser, StreamEvent, check, headers, retry_after

__all__ = ["K2Client"]


class K2Client(Routes):
    """K2's REST API from Python, Arrow IPC on the wire.

    Args:
        url: the API's base URL (default ``K2_API_URL`` or http://127.0.0.1:8000).
        api_key: sent as ``X-API-Key``; default ``K2_API_KEY``; none is needed on localhost.
        timeout: seconds for connecting and for each read.
        retries: how often a 429 is retried, each after the server's Retry-After.
        output: the default frame type: "polars", "pandas" or "arrow".
    """

    def __init__(self, url: str | None = None, *, api_key: str | None = None, timeout: float = 30.0,
                 retries: int = 3, output: Output = "polars",
                 transport: httpx.BaseTransport | None = None) -> None:  # fmt: skip
        self.url = url or os.environ.get("K2_API_URL", DEFAULT_URL)
        self.retries = retries
        self.output = output
        self._http = httpx.Client(
            base_url=self.url, headers=headers(api_key), timeout=timeout, transport=transport
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _get(self, call: Call) -> httpx.Response:
        """One GET, retried on 429 after Retry-After.

        Raises:
            ClientConnectionError: no connection, or no answer within the timeout.
            RateLimitError, ApiError: the server's error.
        """
        for attempt in range(self.retries + 1):
            try:
                response = self._http.get(call.path, params=call.params)
            except httpx.TransportError as exc:
                raise ClientConnectionError(f"{type(exc).__name__}: {exc}", url=self.url) from exc
            try:
                check(response)
            except RateLimitError:
                if attempt == self.retries:
                    raise
                time.sleep(retry_after(response))
                continue
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _pages(self, call: Call) -> Iterator[pa.Table]:
        while True:
            response = self._get(call)
            yield read_arrow(response.content)
            cursor = response.headers.get("x-k2-next-cursor")
            if not cursor:
                return
            call = call.page(cursor)

    def _table(self, call: Call, output: Output | None) -> Any:
        tables = list(self._pages(call))
        return convert(pa.concat_tables(tables) if len(tables) > 1 else tables[0], output or self.output)

    def _iter(self, call: Call, output: Output | None) -> Iterator[Any]:
        for table in self._pages(call):
            yield convert(table, output or self.output)

    def _open(self, call: Call) -> Any:
        try:
            return self._http.stream(
                "GET", call.path, params=call.params, timeout=httpx.Timeout(None, connect=10)
            )
        except httpx.TransportError as exc:  # pragma: no cover - raised on enter instead
            raise ClientConnectionError(str(exc), url=self.url) from exc

    def _stream_lines(self, call: Call) -> Iterator[str]:
        try:
            with self._open(call) as response:
                if response.status_code >= 400:
                    response.read()
                    check(response)
                yield from response.iter_lines()
        except httpx.TransportError as exc:
            raise ClientConnectionError(f"{type(exc).__name__}: {exc}", url=self.url) from exc

    def _lines(self, call: Call, output: Output | None, batch_rows: int, rows: bool) -> Iterator[Any]:
        batcher = LineBatcher(output or self.output, batch_rows, rows)
        for line in self._stream_lines(call):
            for item in batcher.feed(line):
                yield item
        for item in batcher.flush():
            yield item

    def _events(self, call: Call) -> Iterator[StreamEvent]:
        parser = SseParser()
        for line in self._stream_lines(call):
            event = parser.feed(line)
            if event is not None:
                yield event
