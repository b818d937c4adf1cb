"""The Kafka side of the tail: an assigned (never subscribed) consumer and a metadata client.

* The **fetcher** is assigned the cached partitions with explicit offsets (``incremental_assign``),
  never joins a group and never commits: the tail's position lives in the cache, and the group
  of ``k2 ingest`` is untouched. librdkafka prefetches in the background, so by the time a query
  asks, most of the tail is already in the local queue.
* The **metadata clients** answer high watermarks (an AdminClient: one ListOffsets request for
  all the partitions of a query) and partition counts (a consumer that never fetches). They are
  separate because a request queued on the fetcher's connection waits behind its fetch long-poll
  (measured: ~500 ms with librdkafka's default ``fetch.wait.max.ms``; 0.3 ms here for two
  partitions, against 0.5 ms for two ``get_watermark_offsets`` calls).

Every call happens under the cache's lock: librdkafka is thread-safe, but one reader at a time
keeps "read until the high watermark" simple to reason about.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_incrementing

from k2.config import KafkaSettings
from k2.config.hybrid import HybridSettings
from k2.hybrid.errors import TailReadError
from k2.observability.logging import get_logger
from k2.types import TopicPartition as TP

__all__ = ["KafkaTail"]

log = get_logger(__name__)

_METADATA_TTL_S = 10.0
_TIMEOUT_S = 5.0
_RETRIES = 8  # retriable broker errors, ~1.4 s of back-off in all
#: Errors that say the client's view of the leaders is out of date (an election in progress is not
#: one: the retries wait for it). ``_NOENT`` "No leaders found": the client's cached metadata still
#: had no leader for a partition two minutes after a new one was elected (a 3-node cluster, its
#: controller SIGKILLed), and every live query failed with 503 until the client was replaced.
_STALE_LEADER = {"FENCED_LEADER_EPOCH", "UNKNOWN_LEADER_EPOCH", "_NOENT"}
#: The offsets client is renewed at most this often.
_RENEW_EVERY_S = 10.0


def _retriable(exc: BaseException) -> bool:
    # a leader election (a new topic, a broker restart) answers NOT_LEADER for a moment
    error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return isinstance(error, KafkaError) and error.retriable()


def _retrying() -> Retrying:
    """Retriable broker errors: up to _RETRIES attempts, 50 ms more back-off after each; others raise at once."""
    return Retrying(
        retry=retry_if_exception(_retriable),
        stop=stop_after_attempt(_RETRIES),
        wait=wait_incrementing(start=0.05, increment=0.05),
        reraise=True,
    )


def _code(exc: KafkaException) -> str | None:
    err = exc.args[0] if exc.args else None
    return err.name() if isinstance(err, KafkaError) else None


class KafkaTail:
    """The two consumers behind the tail cache (create one per cache)."""

    def __init__(self, kafka: KafkaSettings, hybrid: HybridSettings) -> None:
        base: dict[str, Any] = {
            "bootstrap.servers": kafka.bootstrap,
            # required by librdkafka even for assign(); this id never joins and never commits
            "group.id": f"k2-hybrid-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            **kafka.client,
        }
        self._fetcher = Consumer(
            {
                **base,
                "client.id": "k2-hybrid-tail",
                "fetch.wait.max.ms": hybrid.fetch_wait_max_ms,
                "fetch.max.bytes": 64 * 1024 * 1024,
                "queued.max.messages.kbytes": 128 * 1024,
            }
        )
        self._meta = Consumer({**base, "client.id": "k2-hybrid-meta"})
        self._admin_config: dict[str, Any] = {
            "bootstrap.servers": kafka.bootstrap,
            "client.id": "k2-hybrid-offsets",
            **kafka.client,
        }
        self._admin = AdminClient(self._admin_config)
        self._renewed_at = -_RENEW_EVERY_S  # when the offsets client was last renewed
        self._assigned: set[TP] = set()
        self._paused: set[TP] = set()
        self._counts: dict[str, tuple[float, int]] = {}
        self._closed = False

    def partition_count(self, topic: str) -> int:
        """Partitions of ``topic`` (0 if it does not exist yet), cached for a few seconds.

        Raises:
            TailReadError: the cluster did not answer.
        """
        cached = self._counts.get(topic)
        now = time.monotonic()
        if cached is not None and now - cached[0] < _METADATA_TTL_S:
            return cached[1]
        try:
            meta = self._meta.list_topics(topic, timeout=_TIMEOUT_S)
        except KafkaException as exc:
            raise TailReadError(
                f"cannot read metadata of {topic}: {exc}", topic=topic, code=_code(exc)
            ) from exc
        found = meta.topics.get(topic)
        count = 0 if found is None or found.error is not None else len(found.partitions)
        self._counts[topic] = (now, count)
        return count

    def high_watermarks(self, tps: list[TP]) -> dict[TP, int]:
        """The high watermark of each partition, asked of the broker now (one request per leader).

        Raises:
            TailReadError: the broker did not answer.
        """
        return self._list_offsets(tps, OffsetSpec.latest())  # type: ignore[no-untyped-call]

    def low_watermarks(self, tps: list[TP]) -> dict[TP, int]:
        """The first offset retention kept, per partition (asked only when a segment is positioned).

        Raises:
            TailReadError: the broker did not answer.
        """
        return self._list_offsets(tps, OffsetSpec.earliest())  # type: ignore[no-untyped-call]

    def cached_high_watermarks(self, tps: list[TP]) -> dict[TP, int]:
        """High watermarks as of the fetcher's last fetch response (no round trip; -1: unknown)."""
        out = {}
        for topic, partition in tps:
            try:
                _lo, hi = self._fetcher.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            except KafkaException:
                hi = -1
            out[(topic, partition)] = int(hi)
        return out

    def _list_offsets(self, tps: list[TP], spec: OffsetSpec) -> dict[TP, int]:
        if not tps:
            return {}
        request = {TopicPartition(t, p): spec for t, p in tps}
        for renewed in (False, True):
            try:
                for attempt in _retrying():
                    with attempt:
                        futures = self._admin.list_offsets(request, request_timeout=_TIMEOUT_S)
                        return {(tp.topic, tp.partition): int(f.result().offset) for tp, f in futures.items()}
            except KafkaException as exc:
                now = time.monotonic()
                if not renewed and _code(exc) in _STALE_LEADER and now - self._renewed_at >= _RENEW_EVERY_S:
                    self._renewed_at = now
                    # The admin client asked a leader of an epoch the cluster has left behind, and it
                    # keeps asking until its next periodic metadata refresh (minutes): after the
                    # SIGKILL of a broker of a 3-node cluster, every live query failed with
                    # FENCED_LEADER_EPOCH long after the new leaders served. A new client starts
                    # from fresh metadata.
                    log.info("the offsets client's leaders are stale; renewing it", error=str(exc))
                    if not self._closed:
                        self._admin = AdminClient(self._admin_config)
                    continue
                topic, partition = tps[0]
                raise TailReadError(
                    f"cannot read the offsets of {topic}[{partition}]: {exc}",
                    topic=topic,
                    partition=partition,
                    code=_code(exc),
                ) from exc
        raise AssertionError("unreachable: the last attempt returns or raises")

    def position(self, tp: TP, offset: int) -> None:
        """Make the next message fetched from ``tp`` the one at ``offset`` (assigning it if needed).

        A re-assignment rather than a seek: librdkafka drops what it had prefetched from the old
        position, and it works whatever state the partition's fetcher is in.
        """
        part = TopicPartition(tp[0], tp[1], offset)
        if tp in self._assigned:
            self._fetcher.incremental_unassign([TopicPartition(tp[0], tp[1])])
        self._fetcher.incremental_assign([part])
        self._assigned.add(tp)
        self._paused.discard(tp)

    def release(self, tps: list[TP]) -> None:
        """Stop fetching these partitions."""
        gone = [TopicPartition(t, p) for t, p in tps if (t, p) in self._assigned]
        if gone:
            self._fetcher.incremental_unassign(gone)
        for tp in tps:
            self._assigned.discard(tp)
            self._paused.discard(tp)

    def pause(self, tp: TP) -> None:
        """Stop fetching ``tp`` for now (its segment is full); ``position`` resumes it."""
        if tp in self._assigned and tp not in self._paused:
            self._fetcher.pause([TopicPartition(tp[0], tp[1])])
            self._paused.add(tp)

    @property
    def assigned(self) -> set[TP]:
        return set(self._assigned)

    def poll(self, max_messages: int, timeout_s: float) -> list[Message]:
        """Up to ``max_messages`` fetched messages, waiting at most ``timeout_s`` for the first.

        librdkafka's ``consume`` waits out its whole timeout unless the batch fills, so a wait is
        a ``poll`` (it returns with the first message) followed by a drain that does not wait.

        Raises:
            TailReadError: a fatal consumer error.
        """
        try:
            if timeout_s > 0:
                first = self._fetcher.poll(timeout_s)
                if first is None:
                    return []
                messages = [first, *self._fetcher.consume(max_messages - 1, 0)]
            else:
                messages = self._fetcher.consume(max_messages, 0)
        except KafkaException as exc:
            raise TailReadError(f"tail read failed: {exc}", topic="*", code=_code(exc)) from exc
        good = []
        for m in messages:
            err = m.error()
            if err is None:
                good.append(m)
            elif err.code() != KafkaError._PARTITION_EOF:
                if err.fatal():
                    raise TailReadError(
                        f"tail read failed: {err.str()}",
                        topic=m.topic() or "*",
                        partition=m.partition(),
                        code=err.name(),
                    )
                log.warning("tail consumer error", error=err.str(), topic=m.topic(), partition=m.partition())
        return good

    def close(self) -> None:
        """Close both consumers (nothing to commit: the tail's position is the cache's)."""
        if self._closed:
            return
        self._closed = True
        self._admin = None  # type: ignore[assignment]  # no close(): released with its last reference
        for consumer in (self._fetcher, self._meta):
            try:
                consumer.close()
            except Exception as exc:  # closing must not mask what made the caller close
                log.warning("closing a tail consumer failed", error=str(exc))
