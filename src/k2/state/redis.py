"""Redis stores: sequence state (MGET to load; Lua or WATCH/MULTI/EXEC to commit) and exact dedup.

Round trips, not commands, are what cost from Python (redis-py spends ~15 µs per pipelined command,
MEASURED.md), so every operation here is one or two round trips whatever the batch size: MGET for
a batch's states, one EVALSHA (or WATCH + MGET + MULTI/MSET/EXEC) for its commit, one pipeline of
SMISMEMBER per live generation for dedup candidates, one EVALSHA for dedup additions.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import compress, repeat
from operator import is_not, not_
from typing import Any, Literal, TypeVar

import polars as pl
import redis as redislib

from k2.config import RedisSettings
from k2.observability.logging import get_logger
from k2.state.base import DedupStore, PartitionToken, SequenceStore
from k2.state.errors import StaleStateError, StateStoreError
from k2.state.ids import Ids
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
_LIST_BACKOFF_S = 60.0  # after a lost listing (another writer's change), before the next
log = get_logger(__name__)

# KEYS: n token keys, state keys, the last-commit key. ARGV: n, n expected tokens ('' = none), n new
# tokens, states, this commit's id. Returns the previous commit's id (nil: none), or {i, current}
# when token i is stale.
_SEQ_COMMIT = """
local n = tonumber(ARGV[1])
for i = 1, n do
  local cur = redis.call('GET', KEYS[i]) or ''
  if cur ~= ARGV[1 + i] then return {i, cur} end
end
for i = 1, n do redis.call('SET', KEYS[i], ARGV[1 + n + i]) end
local base, t, c = 1 + 2 * n, {}, 0
for j = n + 1, #KEYS - 1 do
  t[c + 1] = KEYS[j]; t[c + 2] = ARGV[base + j - n]; c = c + 2
  if c >= 7000 then redis.call('MSET', unpack(t, 1, c)); c = 0 end
end
if c > 0 then redis.call('MSET', unpack(t, 1, c)) end
return redis.call('SET', KEYS[#KEYS], ARGV[#ARGV], 'GET')
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
    """Ids as the client sends them (one ``to_list`` for a series instead of per-item access)."""
    return ids.to_list() if isinstance(ids, pl.Series) else list(ids)


def _glob_escape(text: str) -> str:
    """``text`` matched literally by a SCAN pattern."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


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

    Every commit also writes a random id of its own to ``<prefix>seq:last`` in the same transaction
    and reads back the one before (the idle-state sweep moves it too). With ``cache_keys`` the store
    keeps the states it wrote and read, valid while the newest change in Redis is its own: each
    load reads that key in the same MGET as the keys it misses, and a commit whose predecessor was
    not the store's own last starts the cache again. So does any other writer's commit, a sweep
    that deleted keys, and a Redis restarted from an older snapshot (its last id is then an older
    one). Once a background SCAN has listed every key name of the namespace, a key neither cached
    nor listed is known absent without asking: at 1 M symbols most keys a batch asks for are new,
    and the MGET the classification waits for shrinks from ~6,000 keys to one.

    Args:
        settings: the Redis section (URL and key prefix).
        commit_mode: "watch" (WATCH the token keys, MGET, MULTI/MSET/EXEC; retried if a watched
            key changed without failing the fence) or "lua" (one EVALSHA: check tokens, then MSET).
            "watch" is the default because it measured ~10 % faster per commit on loopback
            (docs/state.md); "lua" needs one round trip instead of three, so prefer it when Redis
            is across a network.
        client: an existing client to share; by default one is made from ``settings``.
        cache_keys: states kept in memory (0: none, every load reads Redis); past this many the
            cache starts again.
    """

    backend = "redis"

    def __init__(
        self,
        settings: RedisSettings,
        *,
        commit_mode: CommitMode = "watch",
        client: redislib.Redis | None = None,
        cache_keys: int = 0,
    ) -> None:
        self.prefix = settings.key_prefix
        self.commit_mode = commit_mode
        self._client = client or redis_client(settings)
        self._owns_client = client is None
        self._script = self._client.register_script(_SEQ_COMMIT)
        self._last_key = f"{self.prefix}seq:last"
        self._cache_keys = cache_keys
        self._cache: dict[StateKey, KeyState] = {}
        self._last: str | None = None  # the newest change's id the cache agrees with (None: none known)
        self._inflight: set[str] = set()  # ids of this store's commits not returned yet
        self._lock = threading.Lock()  # load and commit run on different threads (the pipeline's hook)
        self._names_known: set[str] | None = None  # every key name in Redis (None: not listed)
        self._written: set[str] = set()  # names committed while a listing runs
        self._epoch = 0  # + 1 whenever the cache is dropped: a listing started before must not land
        self._listing: threading.Thread | None = None
        self._list_after = 0.0  # monotonic time before which no listing starts (backoff)
        self._list_wait = _LIST_BACKOFF_S
        self._closing = False

    def _key(self, key: StateKey) -> str:
        return f"{self.prefix}seq:{key[0]}:{key[1]}:{key[2]}"

    def _token_key(self, topic: str, partition: int) -> str:
        return f"{self.prefix}seq:tok:{topic}:{partition}"

    def load(self, keys: Iterable[StateKey]) -> dict[StateKey, KeyState]:
        keys = list(keys)
        if not keys:
            return {}
        if not self._cache_keys:
            return self._read(keys, self._mget(self._names(keys)))
        with self._lock:
            seen, cache, known = self._last, self._cache, self._names_known
            got = list(map(cache.get, keys))
        cached = list(map(is_not, got, repeat(None)))  # C-level passes: ~14,000 keys a batch at 1 M symbols
        missing = list(compress(keys, map(not_, cached)))
        names = self._names(missing)
        if known is not None:  # listed: only the names Redis holds are worth asking for
            listed = list(map(known.__contains__, names))
            missing, names = list(compress(missing, listed)), list(compress(names, listed))
        values = self._mget([self._last_key, *names])
        now = _text(values[0]) or None
        fresh = self._read(missing, values[1:])
        with self._lock:
            if now is None:  # no id in Redis (no commit yet, a Redis that lost it): not a version
                if self._last is not None or self._cache or self._names_known is not None:
                    self._drop()
            elif now == self._last:
                if now == seen:  # no change since the snapshot: what was read is current
                    self._keep(fresh)
                    if self._names_known is None:
                        self._list_names()
            elif self._last is None and not self._cache and not self._inflight:
                self._drop()  # nothing from before (a listing in flight, names) may land on it
                self._last = now  # an empty cache agrees with any state: the baseline
                self._list_names()
            elif now != seen and now not in self._inflight:  # another writer's change, or an older Redis
                # (now == seen: read before the store's own commit moved the id, exact; the next load
                # compares the id with the new one)
                self._drop()
        if now != seen:  # a change came between: the snapshot's answers may be stale, ask for all
            return self._read(keys, self._mget(self._names(keys)))
        fresh.update(zip(compress(keys, cached), compress(got, cached), strict=True))  # type: ignore[arg-type]
        return fresh

    def _drop(self) -> None:
        """Forget every cached state and the listing (under ``_lock``)."""
        self._cache, self._last, self._names_known = {}, None, None
        self._written = set()
        self._epoch += 1

    def _list_names(self) -> None:
        """Start listing the namespace's key names on a thread (under ``_lock``, baseline just set)."""
        busy = self._listing is not None and self._listing.is_alive()
        if busy or self._closing or time.monotonic() < self._list_after:
            return
        self._list_after = time.monotonic() + self._list_wait  # the next listing, if this one is lost
        self._list_wait = min(self._list_wait * 2, 3600.0)
        self._written = set()
        self._listing = threading.Thread(
            target=self._list_all, args=(self._epoch,), name="k2-state-list", daemon=True
        )
        self._listing.start()

    def _list_all(self, epoch: int) -> None:
        """SCAN every key name; correct to land if no other change came since the baseline (same
        epoch): SCAN returns every key present from its start to its end, and the store's own
        commits meanwhile are added from ``_written``."""
        try:
            # SCAN's guarantee holds within one server process: a cursor that redis-py's retry carries
            # over to a restarted (or failed-over) Redis skips keys, so the server must be the same
            server = self._client.info("server").get("run_id")
            pattern = _glob_escape(f"{self.prefix}seq:") + "*"
            names: set[str] = set()
            for name in self._client.scan_iter(match=pattern, count=10_000):
                if self._closing or self._epoch != epoch:
                    return
                names.add(name.decode() if isinstance(name, bytes) else name)
                if len(names) > self._cache_keys:
                    log.info("sequence state: more keys than state.redis_cache_keys; every miss reads Redis",
                             keys=len(names), limit=self._cache_keys)  # fmt: skip
                    return
            if self._client.info("server").get("run_id") != server:
                log.warning(
                    "sequence state listing spanned a Redis restart; missing keys are read from Redis"
                )
                return
        except Exception as exc:  # a failed listing costs speed, not correctness: loads ask Redis
            log.warning("sequence state listing failed; missing keys are read from Redis", error=str(exc))
            return
        with self._lock:
            if self._epoch == epoch and not self._closing:
                self._names_known = names | self._written
                self._written = set()
                self._list_wait = _LIST_BACKOFF_S

    def _mget(self, names: list[str]) -> list[Any]:
        return _call("MGET", lambda: self._client.mget(names))

    @staticmethod
    def _read(keys: list[StateKey], values: list[Any]) -> dict[StateKey, KeyState]:
        hit = list(map(is_not, values, repeat(None)))
        return dict(zip(compress(keys, hit), decode_states(list(compress(values, hit))), strict=True))

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
        commit_id = uuid.uuid4().hex
        with self._lock:
            last = self._last
            self._inflight.add(commit_id)
        try:
            if self.commit_mode == "lua":
                prev = self._commit_lua(pairs, tokens, commit_id)
            else:
                prev = self._commit_watch(pairs, tokens, commit_id)
        except BaseException:
            with self._lock:  # written or not, the cache cannot tell: start again
                self._inflight.discard(commit_id)
                self._drop()
            raise
        with self._lock:
            self._inflight.discard(commit_id)
            if not self._cache_keys:
                return
            if (
                last is None or prev != last or self._last != last
            ):  # another writer's change came between (or a drop)
                self._drop()
            self._keep(states)
            self._last = commit_id
            if self._names_known is not None:
                self._names_known.update(pairs)
            elif self._listing is not None and self._listing.is_alive():
                self._written.update(pairs)  # the names this commit created, for the listing
            if self._names_known is not None and len(self._names_known) > self._cache_keys:
                self._names_known = None

    def _keep(self, states: Mapping[StateKey, KeyState]) -> None:
        """Add to the cache (under ``_lock``), first emptying it if it would pass its bound."""
        if len(self._cache) + len(states) > self._cache_keys:
            self._cache = {}
        if len(states) <= self._cache_keys:
            self._cache.update(states)

    def _commit_lua(
        self, pairs: dict[str, bytes], tokens: Sequence[PartitionToken], commit_id: str
    ) -> str | None:
        """One EVALSHA; returns the previous commit's id."""
        keys: list[Any] = [self._token_key(t.topic, t.partition) for t in tokens]
        args: list[Any] = [
            len(tokens),
            *(_token_text(t.expected) for t in tokens),
            *(t.offset for t in tokens),
        ]
        keys.extend(pairs)
        keys.append(self._last_key)
        args.extend(pairs.values())
        args.append(commit_id)
        result = _call("commit script", lambda: self._script(keys=keys, args=args))
        if isinstance(result, list):
            index, current = result
            raise _stale(tokens[int(index) - 1], current)
        return _text(result) or None

    def _commit_watch(
        self, pairs: dict[str, bytes], tokens: Sequence[PartitionToken], commit_id: str
    ) -> str | None:
        """WATCH the tokens, check them, then MULTI/MSET/SET GET/EXEC; returns the previous commit's id."""
        token_keys = [self._token_key(t.topic, t.partition) for t in tokens]
        writes: dict[str, Any] = {**pairs, **{k: t.offset for k, t in zip(token_keys, tokens, strict=True)}}

        def attempt() -> tuple[str | None] | None:
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
                    pipe.set(self._last_key, commit_id, get=True)
                    return (_text(pipe.execute()[-1]) or None,)
                except redislib.WatchError:
                    return None  # a token changed under us: check it again

        for _ in range(8):
            done = _call("commit transaction", attempt)
            if done is not None:
                return done[0]
        raise StateStoreError("redis commit kept losing WATCH races on its token keys", backend="redis")

    def token(self, topic: str, partition: int) -> int | None:
        value = _call("GET", lambda: self._client.get(self._token_key(topic, partition)))
        return int(value) if value else None

    def close(self) -> None:
        self._closing = True
        if self._listing is not None:
            self._listing.join(timeout=30)
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
