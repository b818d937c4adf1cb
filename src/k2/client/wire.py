"""What both clients do with a response: errors with the server's code, Retry-After, SSE events."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import httpx

from k2.client.errors import ApiError, RateLimitError

__all__ = ["DEFAULT_URL", "MAX_WAIT_S", "SseParser", "StreamEvent", "check", "headers", "retry_after"]

DEFAULT_URL = "http://127.0.0.1:8000"
#: The longest a client sleeps on one Retry-After, whatever the server says.
MAX_WAIT_S = 60.0


@dataclass(frozen=True)
class StreamEvent:
    """One server-sent event of ``/v1/stream``: ``kind`` is status, trade, quote or bar."""

    kind: str
    data: dict[str, Any]


def headers(api_key: str | None) -> dict[str, str]:
    """The key from the argument, else ``K2_API_KEY``; none on a loopback server without keys."""
    key = api_key if api_key is not None else os.environ.get("K2_API_KEY")
    return {"X-API-Key": key} if key else {}


def retry_after(response: httpx.Response) -> float:
    try:
        return min(MAX_WAIT_S, max(0.0, float(response.headers.get("retry-after", "1"))))
    except ValueError:  # an HTTP date instead of seconds: wait a second
        return 1.0


def check(response: httpx.Response) -> None:
    """Raise the server's error as :class:`ApiError` (its body must have been read).

    Raises:
        RateLimitError: 429 (the caller decides whether to retry first).
        ApiError: any other status >= 400.
    """
    if response.status_code < 400:
        return
    try:
        body = response.json()
        code, detail = str(body.get("error", "http_error")), str(body.get("detail", ""))
        cid = body.get("correlation_id")
    except (ValueError, AttributeError):
        code, detail, cid = "http_error", response.text[:500], None
    cid = cid or response.headers.get("x-correlation-id")
    if response.status_code == 429:
        raise RateLimitError(detail, cid, retry_after(response))
    raise ApiError(response.status_code, code, detail, cid)


class SseParser:
    """Incremental ``text/event-stream`` parsing: feed lines, get events at each blank line."""

    def __init__(self) -> None:
        self._kind = "message"
        self._data: list[str] = []

    def feed(self, line: str) -> StreamEvent | None:
        if not line:
            if not self._data:
                return None
            event = StreamEvent(self._kind, json.loads("\n".join(self._data)))
            self._kind, self._data = "message", []
            return event
        if line.startswith(":"):  # keep-alive comment
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self._kind = value
        elif name == "data":
            self._data.append(value)
        return None
