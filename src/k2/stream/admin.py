"""Topic administration: create K2's topics with the configured layout, once, idempotently."""

from __future__ import annotations

import time
from collections.abc import Iterable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from k2.config import KafkaSettings
from k2.observability.logging import get_logger
from k2.stream.errors import TopicAdminError

__all__ = ["DEFAULT_TOPICS", "admin_client", "ensure_topics"]

#: The logical topics K2 uses; full names are ``kafka.topic(name)``.
DEFAULT_TOPICS = ("trades", "quotes", "reference", "dlq")
log = get_logger(__name__)


def admin_client(kafka: KafkaSettings) -> AdminClient:
    """An AdminClient for the configured cluster (extra client options included)."""
    return AdminClient({"bootstrap.servers": kafka.bootstrap, **kafka.client})


def ensure_topics(
    kafka: KafkaSettings, names: Iterable[str] = DEFAULT_TOPICS, *, timeout_s: float = 30.0
) -> list[str]:
    """Create the missing topics with the configured partitions, replication and retention.

    Existing topics are left as they are (a partition count is never changed behind the pipeline's
    back: it would move symbols between partitions). Returns once the new topics are visible in
    the cluster metadata, so a producer started next finds them.

    Args:
        kafka: the Kafka settings.
        names: logical names ("trades"…), expanded with the topic prefix.
        timeout_s: how long to wait for the broker.

    Returns:
        The full names of the topics that were created.

    Raises:
        TopicAdminError: the cluster is unreachable or refused to create a topic.
    """
    admin = admin_client(kafka)
    wanted = [kafka.topic(n) for n in names]
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        raise TopicAdminError(f"cannot list topics on {kafka.bootstrap}: {exc}") from exc
    config = {
        "retention.ms": str(kafka.retention_ms),
        "retention.bytes": str(kafka.retention_bytes),
        "segment.ms": str(kafka.segment_ms),
        # with acks=all, a write is acknowledged once this many replicas hold it
        "min.insync.replicas": str(kafka.min_insync),
    }
    todo = [
        NewTopic(t, num_partitions=kafka.partitions, replication_factor=kafka.replicas, config=config)
        for t in wanted
        if t not in existing
    ]
    created: list[str] = []
    if todo:
        futures = admin.create_topics(todo, operation_timeout=timeout_s, request_timeout=timeout_s)
        for topic, future in futures.items():
            try:
                future.result()
                created.append(topic)
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue  # created concurrently by another process: fine
                code = error.name() if isinstance(error, KafkaError) else None
                raise TopicAdminError(f"cannot create topic {topic}: {exc}", topic=topic, code=code) from exc
        _wait_visible(admin, created, kafka.partitions, timeout_s)
        log.info("topics created", topics=created, partitions=kafka.partitions)
    return created


def _wait_visible(admin: AdminClient, topics: list[str], partitions: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    pending = set(topics)
    while pending:
        meta = admin.list_topics(timeout=max(0.1, deadline - time.monotonic()))
        pending = {t for t in pending if t not in meta.topics or len(meta.topics[t].partitions) < partitions}
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TopicAdminError(
                f"topics {sorted(pending)} not visible after {timeout_s}s", topic=min(pending)
            )
        time.sleep(0.05)
