"""One set of hybrid settings for every API replica, kept in Redis.

Replicas behind one address must answer a request alike, and the hybrid reader's settings
(``hybrid.*``: max_minutes, consistency, the tail bounds and waits) shape answers. When
``api.shares_hybrid`` holds, the group's settings live in one Redis key,
``<redis.key_prefix>api:hybrid``:

* at start-up a replica writes its own settings there with SET NX; if the key exists, it adopts
  the stored ones and logs each field that differed from its own (``resolve``);
* an operator changes them with ``k2 config hybrid publish`` (or ``k2 serve --publish-hybrid``),
  which overwrites the key. Running replicas notice within ``api.shared_hybrid_check_s`` (a
  warning in the log, /health's ``hybrid`` check turns ``stale``) and adopt the new settings when
  restarted: the tail cache, its consumers and open live streams are built on them, so they are
  not swapped under running queries;
* every response carries ``X-K2-Hybrid-Config``, the effective settings' fingerprint, so a client
  can check that it talks to one consistent API.

Redis unreachable, or the key unreadable, at start-up is an error and the replica does not start,
rather than serving its own settings: it could then answer differently from the others, silently,
while the proxy keeps sending requests to the replicas that did start. Once started, a replica
keeps its settings through a Redis outage (/health says ``unreachable``).
"""

from __future__ import annotations

import functools
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import redis as redislib
from pydantic import ValidationError

from k2.api.errors import GroupSettingsError, GroupUnavailableError
from k2.config import HybridSettings, RedisSettings, Settings
from k2.observability.logging import get_logger

__all__ = ["HEADER", "KEY_SUFFIX", "GroupDocument", "HybridConfig", "HybridGroup", "resolve"]

log = get_logger("k2.api.hybrid_group")

#: The response header naming the effective hybrid settings' fingerprint.
HEADER = "X-K2-Hybrid-Config"
#: The group's key, after redis.key_prefix.
KEY_SUFFIX = "api:hybrid"
_VERSION = 1
_T = TypeVar("_T")


@dataclass(frozen=True)
class GroupDocument:
    """The value of the group's key: the settings, who published them and when.

    The stored ``fingerprint`` is for people reading the key with redis-cli; readers recompute it.
    """

    settings: HybridSettings
    published_by: str
    published_at: str

    @classmethod
    def of(cls, settings: HybridSettings) -> GroupDocument:
        """A document for ``settings``, published now by this host and process."""
        at = datetime.now(UTC).isoformat(timespec="seconds")
        return cls(settings, f"{socket.gethostname()}:{os.getpid()}", at)

    def encode(self) -> str:
        return json.dumps(
            {
                "version": _VERSION,
                "fingerprint": self.settings.fingerprint(),
                "published_by": self.published_by,
                "published_at": self.published_at,
                "settings": self.settings.model_dump(mode="json"),
            },
            sort_keys=True,
        )

    @classmethod
    def decode(cls, raw: bytes | str, key: str) -> GroupDocument:
        """Parse a stored value.

        Raises:
            GroupSettingsError: not K2's JSON document, another version, or invalid settings.
        """
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise GroupSettingsError(key, f"its value is not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise GroupSettingsError(key, f"its value is JSON {type(data).__name__}, not an object")
        if data.get("version") != _VERSION:
            raise GroupSettingsError(
                key, f"its version is {data.get('version')!r} and this K2 reads version {_VERSION}"
            )
        try:
            settings = HybridSettings.model_validate(data.get("settings"))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()[:5]
            )
            raise GroupSettingsError(key, f"its settings are invalid ({problems})") from None
        return cls(settings, str(data.get("published_by", "?")), str(data.get("published_at", "?")))


def _address(redis: RedisSettings) -> str:
    """host:port of the Redis server, without credentials (for error messages)."""
    if redis.managed:
        return f"127.0.0.1:{redis.port}"
    parts = urlsplit(redis.effective_url)
    return f"{parts.hostname}:{parts.port or 6379}"


class HybridGroup:
    """The replica group's hybrid settings in Redis: read, claim (SET NX) and publish (overwrite)."""

    def __init__(self, redis: RedisSettings, *, timeout_s: float = 2.0) -> None:
        self.key = f"{redis.key_prefix}{KEY_SUFFIX}"
        self._address = _address(redis)
        self._client = redislib.Redis.from_url(
            redis.effective_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )

    def _call(self, fn: Callable[[], _T]) -> _T:
        try:
            return fn()
        except redislib.RedisError as exc:
            raise GroupUnavailableError(self._address, f"{type(exc).__name__}: {exc}") from None

    def read(self) -> GroupDocument | None:
        """The group's settings, None if none were published.

        Raises:
            GroupUnavailableError: Redis did not answer.
            GroupSettingsError: the stored value is unusable.
        """
        raw = self._call(lambda: self._client.get(self.key))
        return None if raw is None else GroupDocument.decode(raw, self.key)

    def claim(self, settings: HybridSettings) -> tuple[GroupDocument, bool]:
        """The group's settings: ``settings`` if no one published any (True), else the stored ones.

        Raises:
            GroupUnavailableError, GroupSettingsError: as ``read``.
        """
        for _ in range(5):  # the key may vanish between SET NX and GET (a concurrent delete)
            mine = GroupDocument.of(settings)
            if self._call(functools.partial(self._client.set, self.key, mine.encode(), nx=True)):
                return mine, True
            found = self.read()
            if found is not None:
                return found, False
        raise GroupUnavailableError(self._address, f"{self.key} kept changing while being read")

    def publish(self, settings: HybridSettings) -> tuple[GroupDocument, GroupDocument | None]:
        """Make ``settings`` the group's; returns them and the previous ones (None: none, or unusable).

        Raises:
            GroupUnavailableError: Redis did not answer.
        """
        mine = GroupDocument.of(settings)
        previous = self._call(lambda: self._client.set(self.key, mine.encode(), get=True))
        if not isinstance(previous, (bytes, str)):  # None: nothing was stored
            return mine, None
        try:
            return mine, GroupDocument.decode(previous, self.key)
        except GroupSettingsError:  # publishing is how an unusable value gets replaced
            return mine, None

    def close(self) -> None:
        self._client.close()


Check = Literal["ok", "stale", "unreachable", "malformed"]


class HybridConfig:
    """This app's effective hybrid settings and, when they are the group's, a watch on the group.

    ``status()`` is /health's ``hybrid`` check; ``start()`` and ``close()`` run and stop the watch
    (the app's lifespan).
    """

    def __init__(
        self, settings: HybridSettings, *, group: HybridGroup | None = None, interval_s: float = 5.0
    ) -> None:
        self.settings = settings
        self.fingerprint = settings.fingerprint()
        self.group = group
        self.interval_s = interval_s
        self._state: Check = "ok"
        self._group_fingerprint: str | None = self.fingerprint if group else None
        self._checked = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def source(self) -> Literal["group", "local"]:
        return "group" if self.group is not None else "local"

    def status(self) -> dict[str, Any]:
        """/health's ``hybrid`` check: ok, or stale (the group's changed), unreachable, malformed."""
        out: dict[str, Any] = {"status": self._state, "source": self.source, "fingerprint": self.fingerprint}
        if self.group is not None:
            out |= {
                "key": self.group.key,
                "group_fingerprint": self._group_fingerprint,
                "checked_s_ago": round(time.monotonic() - self._checked, 1),
            }
        return out

    def check(self) -> Check:
        """Compare with the group's settings once (the watch calls this every ``interval_s``)."""
        if self.group is None:
            return "ok"
        try:
            found = self.group.read()
            if found is None:  # deleted, or Redis lost it: this replica's settings are the group's again
                found, _ = self.group.claim(self.settings)
                log.info("hybrid settings: republished the group's", key=self.group.key,
                         fingerprint=found.settings.fingerprint())  # fmt: skip
            state: Check = "ok"
            group_fp: str | None = found.settings.fingerprint()
            if group_fp != self.fingerprint:
                state = "stale"
                if group_fp != self._group_fingerprint:
                    log.warning(
                        "hybrid settings: the group's changed; this replica keeps its own until restarted",
                        key=self.group.key, fingerprint=self.fingerprint, group_fingerprint=group_fp,
                        published_by=found.published_by, differs=self.settings.differences(found.settings),
                    )  # fmt: skip
        except GroupUnavailableError as exc:
            state, group_fp = "unreachable", self._group_fingerprint
            if self._state != "unreachable":
                log.warning("hybrid settings: cannot compare with the group's", error=str(exc))
        except GroupSettingsError as exc:
            state, group_fp = "malformed", None
            if self._state != "malformed":
                log.error("hybrid settings: the group's are unusable", error=str(exc))
        self._state, self._group_fingerprint, self._checked = state, group_fp, time.monotonic()
        return state

    def start(self) -> None:
        if self.group is None or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._watch, name="k2-hybrid-group", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check()
            except Exception as exc:  # the watch reports; it must never take the server down
                log.error("hybrid settings: check failed", error=f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.group is not None:
            self.group.close()


def resolve(settings: Settings, *, publish: bool = False) -> HybridConfig:
    """The hybrid settings this app serves: its own, or the replica group's (``api.shares_hybrid``).

    ``publish`` makes this process's settings the group's (overwriting them) before joining.

    Raises:
        GroupUnavailableError: the settings are shared and Redis did not answer.
        GroupSettingsError: the group's stored settings are unusable.
    """
    own = settings.hybrid
    if not settings.api.shares_hybrid:
        return HybridConfig(own)
    group = HybridGroup(settings.redis)
    try:
        if publish:
            doc, previous = group.publish(own)
            log.warning("hybrid settings: published this replica's as the group's", key=group.key,
                        fingerprint=own.fingerprint(),
                        differs=own.differences(previous.settings) if previous else None)  # fmt: skip
        else:
            doc, claimed = group.claim(own)
            if claimed:
                log.info("hybrid settings: this replica's are the group's", key=group.key,
                         fingerprint=own.fingerprint())  # fmt: skip
            elif differs := own.differences(doc.settings):
                log.warning(
                    "hybrid settings: adopting the group's, which differ from this replica's",
                    key=group.key, fingerprint=doc.settings.fingerprint(), own_fingerprint=own.fingerprint(),
                    published_by=doc.published_by, published_at=doc.published_at, differs=differs,
                )  # fmt: skip
            else:
                log.info("hybrid settings: joined the group", key=group.key, fingerprint=own.fingerprint())
    except BaseException:
        group.close()
        raise
    return HybridConfig(doc.settings, group=group, interval_s=settings.api.shared_hybrid_check_s)
