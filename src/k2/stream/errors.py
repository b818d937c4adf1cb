"""Errors of K2's Kafka clients: producing, topic administration and dead letters."""

from __future__ import annotations

from k2.errors import K2Error

__all__ = ["DeadLetterFormatError", "ProduceError", "StreamError", "TopicAdminError", "UndeliveredError"]


class StreamError(K2Error):
    """Talking to Kafka failed.

    Attributes:
        topic: the topic concerned, when one is.
    """

    def __init__(self, message: str, *, topic: str | None = None) -> None:
        super().__init__(message)
        self.topic = topic


class ProduceError(StreamError):
    """A message could not be handed to the producer (too large, unknown topic, fatal producer state).

    Attributes:
        code: librdkafka's error name (e.g. ``MSG_SIZE_TOO_LARGE``), when Kafka gave one.
    """

    def __init__(self, message: str, *, topic: str | None = None, code: str | None = None) -> None:
        super().__init__(message, topic=topic)
        self.code = code


class UndeliveredError(StreamError):
    """Closing the producer left accepted messages undelivered (the broker stayed unreachable).

    Attributes:
        undelivered: how many messages were still queued or in flight.
    """

    def __init__(self, message: str, *, undelivered: int) -> None:
        super().__init__(message)
        self.undelivered = undelivered


class TopicAdminError(StreamError):
    """A topic could not be created or described.

    Attributes:
        code: librdkafka's error name, when Kafka gave one.
    """

    def __init__(self, message: str, *, topic: str | None = None, code: str | None = None) -> None:
        super().__init__(message, topic=topic)
        self.code = code


class DeadLetterFormatError(StreamError):
    """A message on the DLQ topic lacks the headers K2 writes (it was not written by K2).

    Attributes:
        partition: the DLQ partition of the message.
        offset: its offset.
    """

    def __init__(self, message: str, *, topic: str | None, partition: int | None, offset: int | None) -> None:
        super().__init__(message, topic=topic)
        self.partition = partition
        self.offset = offset
