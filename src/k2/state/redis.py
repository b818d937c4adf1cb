"""Redis stores: sequence state (MGET to load; Lua or WATCH/MULTI/EXEC to commit) and exact dedup.

Round trips, not commands, are what cost from Python (redis-py spends ~15 µs per pipelined command,
MEASURED.md), so every operation here is one or two round trips whatever the batch size: MGET for
a batch's states, one EVALSHA (or WATCH + MGET + MULTI/MSET/EXEC) for its commit, one pipeline of
SMISMEMBER per live generation for dedup candidates, one EVALSHA for dedup additions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import compress, repeat
from operator import is_not
from typing import Any, Literal, TypeVar

import numpy as np
import polars as pl
import redis as redislib

from k2.config import RedisSettings
from k2.state.base import DedupStore, PartitionToken, SequenceStore
from k2.state.errors import StaleStateError, StateStoreError
from k2.state.ids import Ids, id_hex
from k2.state.model import (
    ClockKey,
    KeyState,
    PartitionClock,
    StateKey,
    decode_clock,
    decode_states,
    encode_clock,
    encode_states,
)

__all__ = ["CommitMode", "RedisDedupStore", "RedisSequenceStore", "redis_client"]

CommitMode = Literal["lua", "watch"]
_T = TypeVar("_T")

# KEYS: n token keys, then state keys. ARGV: n, n expected tokens ('' = none), n new tokens, states.
_SEQ_COMMIT = """
local n = tonumber(ARGV[1])
for i = 1, n do
  local cur = redis.call('GET', KEYS[i]) or ''
  if cur ~= ARGV[1 + i] then return {i, cur} end
end
for i = 1, n do redis.call('SET', KEYS[i], ARGV[1 + n + i]) end
local base, t, c = 1 + 2 * n, {}, 0
for j = n + 1, #KEYS do
  t[c + 1] = KEYS[j]; t[c + 2] = ARGV[base + j - n]; c = c + 2
  if c >= 7000 then redis.call('MSET', unpack(t, 1, c)); c = 0 end
end
if c > 0 then redis.call('MSET', unpack(t, 1, c)) end
return 0
"""

# KEYS: token hash, generation zset. ARGV: bucket prefix, ttl, drop_before, n, (field, expected, new) x n,
# generation count, (generation, id count, ids...) x count.
_DEDUP_ADD = """
local prefix, ttl, drop, n = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local i = 5
for t = 1, n do
  local cur = redis.call('HGET', KEYS[1], ARGV[i]) or ''
  if cur ~= ARGV[i + 1] then return {ARGV[i], cur} end
  i = i + 3
end
i = 5
for t = 1, n do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2]); i = i + 3 end
local ng = tonumber(ARGV[i]); i = i + 1
for g = 1, ng do
  local gen, count = ARGV[i], tonumber(ARGV[i + 1]); i = i + 2
  local key = prefix .. gen
  local j = 0
  while j < count do
    local k = math.min(count - j, 4000)
    redis.call('SADD', key, unpack(ARGV, i + j, i + j + k - 1))
    j = j + k
  end
  i = i + count
  redis.call('EXPIRE', key, ttl)
  redis.call('ZADD', KEYS[2], tonumber(gen), gen)
end
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. drop)
for _, gen in ipairs(old) do redis.call('DEL', prefix .. gen) end
if #old > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. drop) end
return 0
"""


def redis_client(settings: RedisSettings) -> redislib.Redis:
    """A binary-safe client (hiredis parser when installed) for the configured Redis."""
    return redislib.Redis.from_url(settings.effective_url, socket_timeout=30, socket_connect_timeout=10)


def _call(what: str, fn: Callable[[], _T]) -> _T:
    try:
        return fn()
    except redislib.RedisError as exc:
        raise StateStoreError(f"redis {what} failed: {exc}", backend="redis") from exc


def _text(value: bytes | str | None) -> str:
    """A Redis reply as text (the client returns bytes; None and b"" are "")."""
    if not value:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def _as_list(ids: Ids) -> list[str]:
    """Ids as the client sends them, hex text (one ``to_list`` for a series instead of per-item access)."""
    if isinstance(ids, np.ndarray):
        return id_hex(ids)
    return ids.to_list() if isinstance(ids, pl.Series) else list(ids)


def _token_text(value: int | None) -> str:
    return "" if value is None else str(value)


def _stale(token: PartitionToken, current: bytes | str | None) -> StaleStateError:
    text = _text(current)
    actual = int(text) if text else None
    return StaleStateError(
        topic=token.topic, partition=token.partition, expected=token.expected, actual=actual
    )


class RedisSequenceStore(SequenceStore):
    """Sequence state in Redis strings ``<prefix>seq:<kind>:<exchange>:<symbol>``.

    Args:
        settings: the Redis section (URL and key prefix).
        commit_mode: "watch" (WATCH the token keys, MGET, MULTI/MSET/EXEC; retried if a watched
            key changed without failing the fence) or "lua" (one EVALSHA: check tokens, then MSET).
            "watch" is the default because it measured ~10 % faster per commit on loopback
            (docs/state.md); "lua" needs one round trip instead of three, so prefer it when Redis
            is across a network.
        client: an existing client to share; by default one is made from ``settings``.
    """

    backend = "redis"

    def __init__(
        self,
        settings: RedisSettings,
        *,
        commit_mode: CommitMode = "watch",
        client: redislib.Redis | None = None,
    ) -> None:
        self.prefix = settings.key_prefix
        self.commit_mode = commit_mode
        self._client = client or redis_client(settings)
        self._owns_client = client is None
        self._script = self._client.register_script(_SEQ_COMMIT)

    def _key(self, key: StateKey) -> str:
        return f"{self.prefix}seq:{key[0]}:{key[1]}:{key[2]}"

    def _token_key(self, topic: str, partition: int) -> str:
        return f"{self.prefix}seq:tok:{topic}:{partition}"

    def load(self, keys: Iterable[StateKey]) -> dict[StateKey, KeyState]:
        keys = list(keys)
        if not keys:
            return {}
        values = _call("MGET", lambda: self._client.mget(self._names(keys)))
        hit = list(map(is_not, values, repeat(None)))  # C-level passes: ~14,000 keys a batch at 1 M symbols
        return dict(zip(compress(keys, hit), decode_states(list(compress(values, hit))), strict=True))  # type: ignore[arg-type]

    def _names(self, keys: Iterable[StateKey]) -> list[str]:
        """:meth:`_key` of many keys, with C-level maps instead of a call per key."""
        return list(map(f"{self.prefix}seq:".__add__, map(":".join, keys)))

    def _clock_key(self, key: ClockKey) -> str:
        return f"{self.prefix}seq:clk:{key[0]}:{key[1]}"

    def load_clocks(self, keys: Iterable[ClockKey]) -> dict[ClockKey, PartitionClock]:
        keys = list(keys)
        if not keys:
            return {}
        values = _call("MGET", lambda: self._client.mget([self._clock_key(k) for k in keys]))
        return {k: decode_clock(v) for k, v in zip(keys, values, strict=True) if isinstance(v, bytes)}

    def commit(
        self,
        states: Mapping[StateKey, KeyState],
        tokens: Sequence[PartitionToken],
        clocks: Mapping[ClockKey, PartitionClock] | None = None,
    ) -> None:
        pairs = dict(zip(self._names(states), encode_states(states.values()), strict=True))
        pairs.update((self._clock_key(k), encode_clock(c)) for k, c in (clocks or {}).items())
        if self.commit_mode == "lua":
            self._commit_lua(pairs, tokens)
        else:
            self._commit_watch(pairs, tokens)

    def _commit_lua(self, pairs: dict[str, bytes], tokens: Sequence[PartitionToken]) -> None:
        keys: list[Any] = [self._token_key(t.topic, t.partition) for t in tokens]
        args: list[Any] = [
            len(tokens),
            *(_token_text(t.expected) for t in tokens),
            *(t.offset for t in tokens),
        ]
        keys.extend(pairs)
        args.extend(pairs.values())
        result = _call("commit script", lambda: self._script(keys=keys, args=args))
        if result != 0:
            index, current = result
            raise _stale(tokens[int(index) - 1], current)

    def _commit_watch(self, pairs: dict[str, bytes], tokens: Sequence[PartitionToken]) -> None:
        token_keys = [self._token_key(t.topic, t.partition) for t in tokens]
        writes: dict[str, Any] = {**pairs, **{k: t.offset for k, t in zip(token_keys, tokens, strict=True)}}

        def attempt() -> bool:
            with self._client.pipeline(transaction=True) as pipe:
                try:
                    if token_keys:
                        pipe.watch(*token_keys)  # type: ignore[no-untyped-call]
                        for t, current in zip(tokens, pipe.mget(token_keys), strict=True):
                            if _text(current) != _token_text(t.expected):
                                raise _stale(t, current)
                    pipe.multi()
                    if writes:
                        pipe.mset(writes)
                    pipe.execute()
                    return True
                except redislib.WatchError:
                    return False  # a token changed under us: check it again

        for _ in range(8):
            if _call("commit transaction", attempt):
                return
        raise StateStoreError("redis commit kept losing WATCH races on its token keys", backend="redis")

    def token(self, topic: str, partition: int) -> int | None:
        value = _call("GET", lambda: self._client.get(self._token_key(topic, partition)))
        return int(value) if value else None

    def close(self) -> None:
        if self._owns_client:
            self._client.close()


class RedisDedupStore(DedupStore):
    """Exact ids in one Redis SET per generation: ``<prefix>dd:<namespace>:g:<generation>``.

    One SADD per generation per batch (inside one Lua call) instead of one ``SET id EX`` per id. The
    Deduplicator deletes generations as the window slides; the TTL is only a safety net for a
    pipeline that stops for good.

    Args:
        settings: the Redis section.
        namespace: separates stream kinds.
        ttl_s: expiry of a generation's set after its last addition (window + one generation).
    """

    backend = "redis"

    def __init__(
        self, settings: RedisSettings, namespace: str, *, ttl_s: int, client: redislib.Redis | None = None
    ) -> None:
        base = f"{settings.key_prefix}dd:{namespace}:"
        self.namespace = namespace
        self.ttl_s = max(1, int(ttl_s))
        self._bucket = base + "g:"
        self._tokens_key = base + "tok"
        self._gens_key = base + "gens"
        self._client = client or redis_client(settings)
        self._owns_client = client is None
        self._script = self._client.register_script(_DEDUP_ADD)

    def contains(self, ids: Ids, generations: Sequence[int]) -> list[bool]:
        if not len(ids) or not generations:
            return [False] * len(ids)
        ids = _as_list(ids)

        def run() -> list[list[int]]:
            pipe = self._client.pipeline(transaction=False)
            for g in generations:
                pipe.smismember(f"{self._bucket}{g}", ids)
            return pipe.execute()

        answers = _call("SMISMEMBER", run)
        return [any(int(a[i]) for a in answers) for i in range(len(ids))]

    def add(
        self,
        ids_by_generation: Mapping[int, Ids],
        tokens: Sequence[PartitionToken],
        drop_before: int,
    ) -> None:
        args: list[Any] = [self._bucket, self.ttl_s, drop_before, len(tokens)]
        for t in tokens:
            args += [f"{t.topic}\x1f{t.partition}", _token_text(t.expected), t.offset]
        groups = [(g, _as_list(ids)) for g, ids in ids_by_generation.items() if len(ids)]
        args.append(len(groups))
        for g, ids in groups:
            args += [g, len(ids), *ids]
        keys = [self._tokens_key, self._gens_key]
        result = _call("dedup add script", lambda: self._script(keys=keys, args=args))
        if result != 0:
            field, current = result
            topic, _, part = _text(field).rpartition("\x1f")
            token = next(t for t in tokens if t.topic == topic and t.partition == int(part))
            raise _stale(token, current)

    def ids(self, generation: int) -> list[str]:
        members = _call(
            "SSCAN", lambda: list(self._client.sscan_iter(f"{self._bucket}{generation}", count=10_000))
        )
        return [_text(m) for m in members]

    def generations(self) -> list[int]:
        gens: list[Any] = _call("ZRANGE", lambda: self._client.zrange(self._gens_key, 0, -1))
        return [int(_text(g)) for g in gens]

    def tokens(self) -> dict[tuple[str, int], int]:
        raw = _call("HGETALL", lambda: self._client.hgetall(self._tokens_key))
        out = {}
        for field, value in raw.items():
            topic, _, part = _text(field).rpartition("\x1f")
            out[(topic, int(part))] = int(_text(value))
        return out

    def close(self) -> None:
        if self._owns_client:
            self._client.close()
