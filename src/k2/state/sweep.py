"""Delete the Redis sequence state of symbols idle for ``state.idle_days`` sessions.

A symbol's key (``<prefix>seq:<kind>:<exchange>:<symbol>``) would otherwise live forever: delisted
and renamed symbols accumulate. Expiry goes by the sessions in the state, not by wall time, so a
replay of old data ages keys the way the feed does: a key goes once its newest session is
``idle_days`` older than the newest session of any key of its kind and exchange.

A sweep every hour costs one SCAN of the keys; a TTL per key would cost an EXPIRE per key on every
commit, on the hot path (docs/state.md measures both). Each deletion is a compare-and-delete: a key
is deleted only if it still holds the bytes the sweep judged, so a commit that lands in between
(the symbol traded again) keeps its state. A commit that loaded the state before the deletion
writes it back whole when it commits; one that loads it after treats the symbol as new, which
gives the same gap events (a first tick ``s > 1`` opens the hole ``[1, s - 1]`` either way).

What is given up: a re-send of a session more than ``idle_days`` behind the feed is judged by dedup
alone for an idle symbol, as it already is for an active symbol whose ten kept sessions are newer.
Keys with young holes (not yet recorded as gaps; a partition clock lists them) are never swept.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis as redislib

from k2.config import RedisSettings
from k2.observability.logging import get_logger
from k2.state.model import KeyState, decode_state
from k2.state.redis import _call, redis_client

__all__ = ["SweepResult", "Sweeper", "sweep_idle"]

log = get_logger(__name__)
_KINDS = ("trades", "quotes")
_BATCH = 1000

# KEYS: candidate keys. ARGV: the value each held when judged. Deletes those still holding it.
_COMPARE_AND_DELETE = """
local n = 0
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i] then redis.call('DEL', KEYS[i]); n = n + 1 end
end
return n
"""


@dataclass(frozen=True)
class SweepResult:
    scanned: int
    idle: int
    deleted: int


def _glob_escape(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def _states(client: redislib.Redis, prefix: str, kind: str) -> Iterator[list[tuple[bytes, bytes, str]]]:
    """(key, value, exchange) of every sequence key of ``kind``, a SCAN batch at a time."""
    base = f"{prefix}seq:{kind}:"
    keys: list[bytes] = []

    def flush() -> list[tuple[bytes, bytes, str]]:
        values = _call("MGET", lambda: client.mget(keys))
        out = []
        for key, value in zip(keys, values, strict=True):
            if isinstance(value, bytes):
                exchange = key.decode()[len(base) :].split(":", 1)[0]
                out.append((key, value, exchange))
        keys.clear()
        return out

    for key in _call("SCAN", lambda: list(client.scan_iter(match=_glob_escape(base) + "*", count=_BATCH))):
        keys.append(key)
        if len(keys) >= _BATCH:
            yield flush()
    if keys:
        yield flush()


def _young_holes(state: KeyState) -> bool:
    return any(r[2] == 0 for r in state.ranges)


def _compare_and_delete(script: Any, doomed: list[tuple[bytes, bytes]]) -> int:
    keys, values = [k for k, _ in doomed], [v for _, v in doomed]
    return int(_call("sweep script", lambda: script(keys=keys, args=values)))


def sweep_idle(client: redislib.Redis, prefix: str, idle_days: int) -> SweepResult:
    """One sweep over the sequence keys under ``prefix`` (the namespace's key prefix).

    Raises:
        StateStoreError: Redis failed; nothing judged since the last batch was deleted.
    """
    script = client.register_script(_COMPARE_AND_DELETE)
    scanned = idle = deleted = 0
    for kind in _KINDS:
        newest: dict[str, int] = {}  # exchange -> newest session of any of its keys
        for batch in _states(client, prefix, kind):
            for _key, value, exchange in batch:
                session = decode_state(value).session
                newest[exchange] = max(newest.get(exchange, session), session)
        for batch in _states(client, prefix, kind):
            scanned += len(batch)
            doomed = []
            for key, value, exchange in batch:
                state = decode_state(value)
                if state.session < newest.get(exchange, state.session) - idle_days and not _young_holes(
                    state
                ):
                    doomed.append((key, value))
            if doomed:
                idle += len(doomed)
                deleted += _compare_and_delete(script, doomed)
    if deleted:
        log.info(
            "swept idle symbols' state", prefix=prefix, scanned=scanned, deleted=deleted, raced=idle - deleted
        )
    return SweepResult(scanned, idle, deleted)


class Sweeper:
    """``sweep_idle`` every ``every_s`` seconds, on its own thread (the ingester starts it)."""

    def __init__(self, redis: RedisSettings, idle_days: int, every_s: float) -> None:
        self.redis = redis
        self.idle_days = idle_days
        self.every_s = every_s
        self._last = time.monotonic()
        self._busy = threading.Lock()
        self.results: list[SweepResult] = []

    def due(self) -> bool:
        return self.every_s > 0 and time.monotonic() - self._last >= self.every_s and not self._busy.locked()

    def start(self) -> None:
        """Sweep on a thread of its own: safe beside commits, and seconds long at 100 K keys."""
        self._last = time.monotonic()
        threading.Thread(target=self.run, name="k2-state-sweep", daemon=True).start()

    def run(self) -> None:
        """One sweep; a failure is logged and the next one tries again."""
        self._last = time.monotonic()
        if not self._busy.acquire(blocking=False):
            return
        client = redis_client(self.redis)  # an hourly connection: nothing to close at shutdown
        try:
            self.results = [*self.results[-9:], sweep_idle(client, self.redis.key_prefix, self.idle_days)]
        except Exception as exc:
            log.warning("state sweep failed; retried at the next one", error=str(exc))
        finally:
            client.close()
            self._busy.release()
