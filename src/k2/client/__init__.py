"""A small typed client for K2's REST API: Arrow IPC on the wire, polars, pandas or Arrow out.

from k2.client import K2Client
with K2Client("http://127.0.0.1:8000") as k2:
    bars = k2.bars("BHP", "2014-03-10T23:00:00Z", "2014-03-11T06:00:00Z")
"""

from k2.client.aio import AsyncK2Client
from k2.client.errors import ApiError, ClientConnectionError, ClientError, RateLimitError
from k2.client.sync import K2Client
from k2.client.wire import StreamEvent

__all__ = ["ApiError", "AsyncK2Client", "ClientConnectionError", "ClientError", "K2Client", "RateLimitError",
           "StreamEvent"]  # fmt: skip
