"""The native consumer (``native/``, Rust over librdkafka) behind confluent-kafka's ``Consumer`` surface.

confluent-kafka makes one Python ``Message`` per record while holding the GIL: inside the
pipeline, about a third of the GIL's time (issue #17). The native consumer polls with the GIL
released and returns a batch as columns (``NativeBatch``): the payloads joined in one buffer,
partitions, offsets and timestamps as NumPy views. The group life cycle is unchanged: the same
``on_assign`` / ``on_revoke`` / ``on_lost`` callbacks run on the polling thread, with
``confluent_kafka.TopicPartition`` lists, and errors arrive as ``KafkaError`` / ``KafkaException``.

The extension is built by ``make`` (``scripts/build-native.sh``) when a Rust toolchain is present;
without it ``available()`` is False and the pipeline reads with confluent-kafka, the tested fallback
(``pipeline.consumer``: ``auto``, ``native`` or ``python``).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from k2.schemas.joined import JoinedPayloads
from k2.types import TopicPartition as TP

__all__ = ["NativeBatch", "NativeConsumer", "available", "native_version"]

try:  # built by `make` from native/ (scripts/build-native.sh); absent without a Rust toolchain
    from k2 import _native  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - depends on the build
    _native = None

Callback = Callable[[Any, list[TopicPartition]], None]


def available() -> bool:
    """Whether the native extension was built and imports."""
    return _native is not None


def native_version() -> str | None:
    """The librdkafka version the extension was built with (None without the extension)."""
    return None if _native is None else str(_native.LIBRDKAFKA_VERSION)


class NativeBatch:
    """One polled batch as columns; ``len()`` counts its messages and its errors."""

    __slots__ = ("errors", "key_ends", "keys", "offsets", "partitions", "times_ms", "topic_index",
                 "topics", "value_ends", "values")  # fmt: skip

    def __init__(self, raw: tuple[Any, ...]) -> None:
        topics, tix, parts, offs, times, vends, values, _vnull, kends, keys, errors = raw
        self.topics: list[str] = topics
        self.topic_index = np.frombuffer(tix, np.uint16)
        self.partitions = np.frombuffer(parts, np.int32)
        self.offsets = np.frombuffer(offs, np.int64)
        self.times_ms = np.frombuffer(times, np.int64)
        self.value_ends = np.frombuffer(vends, np.int64)
        self.values = np.frombuffer(values, np.uint8)
        self.key_ends = np.frombuffer(kends, np.int64)
        self.keys = keys
        self.errors = [KafkaError(code, reason, fatal) for code, reason, fatal in errors]

    def __len__(self) -> int:
        return len(self.offsets) + len(self.errors)

    def __bool__(self) -> bool:
        return len(self) > 0

    @property
    def messages(self) -> int:
        """Messages without the errors."""
        return len(self.offsets)

    def rows_of(self, topic: str) -> np.ndarray | None:
        """Positions of ``topic``'s messages (None: every message is of that topic)."""
        at = self.topics.index(topic)
        if len(self.topics) == 1:
            return None
        return np.flatnonzero(self.topic_index == at)

    def payloads(self, rows: np.ndarray | None) -> JoinedPayloads:
        whole = JoinedPayloads(self.values, self.value_ends)
        return whole if rows is None else whole.take(rows)

    def key(self, i: int) -> bytes:
        start = int(self.key_ends[i - 1]) if i else 0
        return bytes(self.keys[start : int(self.key_ends[i])])

    def times_us(self, rows: np.ndarray | None) -> np.ndarray:
        times = self.times_ms if rows is None else self.times_ms[rows]
        return np.where(times >= 0, times * 1000, -1)

    def last_offsets(self) -> dict[TP, int]:
        """The highest offset read per partition in this batch."""
        out: dict[TP, int] = {}
        for t, topic in enumerate(self.topics):
            mask = self.topic_index == t
            parts, offs = self.partitions[mask], self.offsets[mask]
            for p in np.unique(parts).tolist():
                out[(topic, p)] = int(offs[parts == p].max())
        return out


def _config(config: dict[str, Any]) -> dict[str, str]:
    """librdkafka properties as strings (a bool as ``true`` / ``false``), without Python callbacks."""
    out: dict[str, str] = {}
    for key, value in config.items():
        if callable(value):
            continue
        out[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


def _raise(exc: BaseException) -> KafkaException:
    code, reason, fatal = exc.args
    return KafkaException(KafkaError(code, reason, fatal))


def _parts(partitions: Sequence[TopicPartition]) -> list[tuple[str, int, int]]:
    return [(p.topic, p.partition, p.offset) for p in partitions]


def _tps(parts: Sequence[tuple[str, int, int]]) -> list[TopicPartition]:
    return [TopicPartition(t, p, o) for t, p, o in parts]


class NativeConsumer:
    """confluent-kafka's ``Consumer`` calls that the pipeline makes, over the native extension.

    ``consume`` returns a ``NativeBatch`` (empty: ``[]``) instead of a list of ``Message``.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        if _native is None:
            raise RuntimeError("the native consumer is not built: run `make setup` with a Rust toolchain")
        self._error_cb: Callable[[KafkaError], None] | None = config.get("error_cb")
        self._callbacks: dict[str, Callback | None] = {}
        # The Rust object holds its callbacks; through a weak reference they do not keep this adapter
        # (and the pipeline its error callback names) alive when nobody closed it.
        me = weakref.ref(self)

        def on_error(code: int, reason: str, fatal: bool) -> None:
            if (adapter := me()) is not None:
                adapter._on_error(code, reason, fatal)

        def on_rebalance(kind: str, parts: list[tuple[str, int, int]]) -> None:
            if (adapter := me()) is not None:
                adapter._on_rebalance(kind, parts)

        try:
            self._inner = _native.NativeConsumer(_config(config), on_error, on_rebalance)
        except _native.NativeKafkaError as exc:
            raise _raise(exc) from None

    def _on_error(self, code: int, reason: str, fatal: bool) -> None:
        if self._error_cb is not None:
            self._error_cb(KafkaError(code, reason, fatal))

    def _on_rebalance(self, kind: str, parts: list[tuple[str, int, int]]) -> None:
        callback = self._callbacks.get(kind)
        if callback is None and kind == "lost":  # as confluent-kafka: no on_lost → on_revoke
            callback = self._callbacks.get("revoke")
        if callback is not None:
            callback(self, _tps(parts))

    def _call(self, method: str, *args: Any) -> Any:
        try:
            return getattr(self._inner, method)(*args)
        except _native.NativeKafkaError as exc:
            raise _raise(exc) from None

    def subscribe(
        self,
        topics: list[str],
        on_assign: Callback | None = None,
        on_revoke: Callback | None = None,
        on_lost: Callback | None = None,
    ) -> None:
        self._callbacks = {"assign": on_assign, "revoke": on_revoke, "lost": on_lost}
        self._call("subscribe", list(topics))

    def consume(self, num_messages: int = 1, timeout: float = -1) -> NativeBatch | list[Any]:
        raw = self._call("consume", num_messages, timeout if timeout >= 0 else 3600.0)
        return [] if raw is None else NativeBatch(raw)

    def assign(self, partitions: Sequence[TopicPartition]) -> None:
        self._call("assign", _parts(partitions))

    def unassign(self) -> None:
        self._call("unassign")

    def assignment(self) -> list[TopicPartition]:
        return _tps(self._call("assignment"))

    def position(self, partitions: Sequence[TopicPartition]) -> list[TopicPartition]:
        return _tps(self._call("position", _parts(partitions)))

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float = 30.0, cached: bool = False
    ) -> tuple[int, int]:
        low, high = self._call("watermarks", partition.topic, partition.partition, timeout, cached)
        return int(low), int(high)

    def commit(self, offsets: Sequence[TopicPartition] | None = None, asynchronous: bool = True) -> None:
        self._call("commit", _parts(offsets or []), asynchronous)

    def pause(self, partitions: Sequence[TopicPartition]) -> None:
        self._call("pause", _parts(partitions))

    def resume(self, partitions: Sequence[TopicPartition]) -> None:
        self._call("resume", _parts(partitions))

    def close(self) -> None:
        self._call("close")
