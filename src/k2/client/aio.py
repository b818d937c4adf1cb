"""The asyncio client: the same calls as :class:`~k2.client.sync.K2Client`, awaited.

Table calls return awaitables; ``iter_trades``/``iter_quotes``, ``replay`` and ``stream`` return
async iterators, for notebooks and services that already run an event loop.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Self

import httpx
import pyarrow as pa

from k2.client.calls import Call
from k2.client.errors import ClientConnectionError, RateLimitError
from k2.client.frames import LineBatcher, Output, convert, read_arrow
from k2.client.routes import Routes
from k2.client.wire import DEFAULT_URL, SseParser, StreamEvent, check, headers, retry_after

__all__ = ["AsyncK2Client"]


class AsyncK2Client(Routes):
    """K2's REST API from asyncio code; arguments as :class:`~k2.client.sync.K2Client`."""

    def __init__(self, url: str | None = None, *, api_key: str | None = None, timeout: float = 30.0,
                 retries: int = 3, output: Output = "polars",
                 transport: httpx.AsyncBaseTransport | None = None) -> None:  # fmt: skip
        self.url = url or os.environ.get("K2_API_URL", DEFAULT_URL)
        self.retries = retries
        self.output = output
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=headers(api_key), timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _get(self, call: Call) -> httpx.Response:
        for attempt in range(self.retries + 1):
            try:
                response = await self._http.get(call.path, params=call.params)
            except httpx.TransportError as exc:
                raise ClientConnectionError(f"{type(exc).__name__}: {exc}", url=self.url) from exc
            try:
                check(response)
            except RateLimitError:
                if attempt == self.retries:
                    raise
                await asyncio.sleep(retry_after(response))
                continue
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    async def _pages(self, call: Call) -> AsyncIterator[pa.Table]:
        while True:
            response = await self._get(call)
            yield read_arrow(response.content)
            cursor = response.headers.get("x-k2-next-cursor")
            if not cursor:
                return
            call = call.page(cursor)

    async def _table(self, call: Call, output: Output | None) -> Any:
        tables = [t async for t in self._pages(call)]
        return convert(pa.concat_tables(tables) if len(tables) > 1 else tables[0], output or self.output)

    async def _iter(self, call: Call, output: Output | None) -> AsyncIterator[Any]:
        async for table in self._pages(call):
            yield convert(table, output or self.output)

    async def _stream_lines(self, call: Call) -> AsyncIterator[str]:
        timeout = httpx.Timeout(None, connect=10)
        try:
            async with self._http.stream("GET", call.path, params=call.params, timeout=timeout) as response:
                if response.status_code >= 400:
                    await response.aread()
                    check(response)
                async for line in response.aiter_lines():
                    yield line
        except httpx.TransportError as exc:
            raise ClientConnectionError(f"{type(exc).__name__}: {exc}", url=self.url) from exc

    async def _lines(
        self, call: Call, output: Output | None, batch_rows: int, rows: bool
    ) -> AsyncIterator[Any]:
        batcher = LineBatcher(output or self.output, batch_rows, rows)
        async for line in self._stream_lines(call):
            for item in batcher.feed(line):
                yield item
        for item in batcher.flush():
            yield item

    async def _events(self, call: Call) -> AsyncIterator[StreamEvent]:
        parser = SseParser()
        async for line in self._stream_lines(call):
            event = parser.feed(line)
            if event is not None:
                yield event
