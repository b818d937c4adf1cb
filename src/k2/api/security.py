"""API keys and rate limits.

Keys: none are needed while the API listens on a loopback address and none are configured;
as soon as keys are configured, or the API is bound beyond localhost, every ``/v1`` request must
carry one in ``X-API-Key``. The comparison runs over every configured key with
``hmac.compare_digest`` and no early exit, so timing tells nothing about which key or how much of
it matched. Keys never reach logs or metrics: a caller is identified by a short hash of its key.

Rate limits: ``rate_limit_per_minute`` requests per caller over a sliding window, counted by the
``limits`` library in process memory or, with ``api.rate_limit_backend = "redis"``, in Redis, so
that every worker and replica draws on one budget. The caller is the hash of its valid key, else
the socket peer (``ip:<address>``); a missing or wrong key is counted against the peer before it
is refused, so guessing keys is rate limited too. A refused request gets 429 with Retry-After.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import time
from typing import Any

from limits import RateLimitItemPerMinute
from limits.errors import StorageError
from limits.storage import MemoryStorage, RedisStorage, Storage
from limits.strategies import SlidingWindowCounterRateLimiter
from pydantic import SecretStr

from k2.api.errors import AuthenticationError, RateLimitedError
from k2.observability.logging import get_logger

__all__ = ["ApiKeys", "RateLimiter", "is_loopback", "rate_limit_storage"]

log = get_logger("k2.api.security")


def is_loopback(host: str) -> bool:
    """True for 'localhost' and loopback addresses (127.0.0.0/8, ::1); 0.0.0.0 is not one."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class ApiKeys:
    """The configured keys and whether requests must present one."""

    def __init__(self, keys: list[SecretStr], *, host: str) -> None:
        self._keys = [k.get_secret_value().encode() for k in keys if k.get_secret_value()]
        self.required = bool(self._keys) or not is_loopback(host)

    def required_on(self, server: tuple[str, int] | list[Any] | None) -> bool:
        """Whether a request that arrived on local address ``server`` (ASGI ``scope["server"]``) needs a key.

        The configured host is only what K2 was told; the socket is what it got (``uvicorn
        --host 0.0.0.0`` beside an ``api.host`` of 127.0.0.1). A request that reached a
        non-loopback address needs a key even then. Names that are not addresses (an in-process
        test client's "testserver") say nothing about a socket and fall back to the setting.
        """
        if self.required or not server:
            return self.required
        try:
            address = ipaddress.ip_address(str(server[0]).strip("[]"))
        except ValueError:
            return False
        return not address.is_loopback

    def check(
        self, presented: str | None, *, server: tuple[str, int] | list[Any] | None = None
    ) -> str | None:
        """The caller's identity (a hash of its key), or None when keys are not required.

        Raises:
            AuthenticationError: a key is required and missing or wrong.
        """
        if not self.required_on(server):
            return None
        if not presented:
            raise AuthenticationError("missing")
        identity = self.identify(presented)
        if identity is None:
            raise AuthenticationError("invalid")
        return identity

    def identify(self, presented: str | None) -> str | None:
        """The identity of a valid key, else None (never raises; for open routes that show more to keys)."""
        if not presented or not self._keys:
            return None
        candidate = presented.encode()
        matched = False
        for key in self._keys:  # no short-circuit: every key is compared, every time
            matched |= hmac.compare_digest(candidate, key)
        return "key:" + hashlib.sha256(candidate).hexdigest()[:12] if matched else None


class RateLimiter:
    """Requests per minute per caller, over a sliding window (the ``limits`` library).

    Storage is process memory (entries expire with their window, so the table holds only callers
    seen in the last two minutes and needs no scan) or Redis, shared by every worker and replica.
    If Redis stops answering, the limiter falls back to process memory rather than to no limit.
    """

    def __init__(self, per_minute: int, *, storage: Storage | None = None, namespace: str = "v1") -> None:
        self.per_minute = per_minute
        self.namespace = namespace
        self._item = RateLimitItemPerMinute(per_minute, namespace=namespace)
        self._shared = storage
        self._local = MemoryStorage()
        self._limiter = SlidingWindowCounterRateLimiter(storage or self._local)
        self._fallback = SlidingWindowCounterRateLimiter(self._local) if storage is not None else None

    def acquire(self, caller: str) -> None:
        """Count one request of ``caller``.

        Raises:
            RateLimitedError: the caller spent its budget; ``retry_after`` says when to come back.
        """
        limiter = self._limiter
        try:
            allowed = limiter.hit(self._item, caller)
        except StorageError as exc:
            if self._fallback is None:
                raise
            log.warning("rate-limit store unreachable; limiting per process", error=str(exc.storage_error))
            limiter = self._fallback
            allowed = limiter.hit(self._item, caller)
        if not allowed:
            try:
                reset = limiter.get_window_stats(self._item, caller).reset_time
            except StorageError:
                reset = time.time() + 60
            raise RateLimitedError(max(1, math.ceil(reset - time.time())), self.per_minute)


def rate_limit_storage(backend: str, redis_url: str, key_prefix: str) -> Storage | None:
    """The shared store for rate limits: None (process memory) or Redis with short timeouts."""
    if backend != "redis":
        return None
    return RedisStorage(
        redis_url,
        key_prefix=f"{key_prefix}ratelimit",
        wrap_exceptions=True,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
    )
