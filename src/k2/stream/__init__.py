"""K2's Kafka side: the tick producer, topic administration and dead letters."""

from __future__ import annotations

from k2.stream.admin import DEFAULT_TOPICS, ensure_topics
from k2.stream.dlq import DeadLetter
from k2.stream.errors import (
    DeadLetterFormatError,
    ProduceError,
    StreamError,
    TopicAdminError,
    UndeliveredError,
)
from k2.stream.producer import ProducerStats, TickProducer, topic_for

__all__ = [
    "DEFAULT_TOPICS",
    "DeadLetter",
    "DeadLetterFormatError",
    "ProduceError",
    "ProducerStats",
    "StreamError",
    "TickProducer",
    "TopicAdminError",
    "UndeliveredError",
    "ensure_topics",
    "topic_for",
]
