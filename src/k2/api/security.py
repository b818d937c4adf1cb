"""API keys and rate limits.

Keys: none are needed while the API listens on a loopback address and none are configured;
as soon as keys are configured, or the API is bound beyond localhost, every ``/v1`` request must
carry one in ``X-API-Key``. The comparison runs over every configured key with
``hmac.compare_digest`` and no early exit, so timing tells nothing about which key or how much of
it matched. Keys never reach logs or metrics: a caller is identified by a short hash of its key.

Rate limits: an in-process token bucket per caller (key hash, else client address) holding
``rate_limit_per_minute`` tokens and refilled continuously at that rate. A refused request gets
429 with Retry-After: the whole seconds until one token is back. Per process: N API workers
allow N times the rate (documented; a shared limiter would need Redis).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import threading
import time
from collections.abc import Callable

from pydantic import SecretStr

from k2.api.errors import AuthenticationError, RateLimitedError

__all__ = ["ApiKeys", "RateLimiter", "is_loopback"]


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

    def check(self, presented: str | None) -> str | None:
        """The caller's identity (a hash of its key), or None when keys are not required.

        Raises:
            AuthenticationError: a key is required and missing or wrong.
        """
        if not self.required:
            return None
        if not presented:
            raise AuthenticationError("missing")
        candidate = presented.encode()
        matched = False
        for key in self._keys:  # no short-circuit: every key is compared, every time
            matched |= hmac.compare_digest(candidate, key)
        if not matched:
            raise AuthenticationError("invalid")
        return "key:" + hashlib.sha256(candidate).hexdigest()[:12]


class RateLimiter:
    """Token buckets per caller, in process memory (thread-safe)."""

    def __init__(
        self, per_minute: int, *, clock: Callable[[], float] = time.monotonic, max_callers: int = 10_000
    ) -> None:
        self.per_minute = per_minute
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0  # tokens per second
        self._clock = clock
        self._max_callers = max_callers
        self._buckets: dict[str, tuple[float, float]] = {}  # caller -> (tokens, at)
        self._lock = threading.Lock()

    def acquire(self, caller: str) -> None:
        """Spend one token of ``caller``'s bucket.

        Raises:
            RateLimitedError: the bucket is empty; ``retry_after`` says when one token is back.
        """
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.get(caller, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - at) * self.rate)
            if tokens < 1.0:
                self._buckets[caller] = (tokens, now)
                raise RateLimitedError(max(1, math.ceil((1.0 - tokens) / self.rate)), self.per_minute)
            self._buckets[caller] = (tokens - 1.0, now)
            if len(self._buckets) > self._max_callers:
                self._forget_idle(now)

    def _forget_idle(self, now: float) -> None:
        """Drop callers whose bucket has refilled: forgetting them changes nothing."""
        full_after = self.capacity / self.rate
        for caller, (_tokens, at) in list(self._buckets.items()):
            if now - at >= full_after:
                del self._buckets[caller]
