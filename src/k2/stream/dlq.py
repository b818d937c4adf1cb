"""Dead letters: messages K2 could not ingest, kept with why and where they came from.

A dead letter travels on the ``dlq`` topic as the original bytes (value and key untouched, so it
can be replayed as is) with three headers: ``k2.reason``, ``k2.source`` and ``k2.time`` (ISO 8601,
UTC). ``DeadLetter.from_message`` reads one back from a consumed Kafka message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from k2.stream.errors import DeadLetterFormatError

__all__ = ["HEADER_REASON", "HEADER_SOURCE", "HEADER_TIME", "DeadLetter", "message_source"]

HEADER_REASON = "k2.reason"
HEADER_SOURCE = "k2.source"
HEADER_TIME = "k2.time"


def _now() -> datetime:
    return datetime.now(UTC)


def message_source(topic: str, partition: int, offset: int) -> str:
    """The ``source`` of a letter taken from Kafka: ``topic=k2.trades partition=1 offset=99``."""
    return f"topic={topic} partition={partition} offset={offset}"


@dataclass(frozen=True)
class DeadLetter:
    """One message that could not be ingested.

    Attributes:
        value: the original bytes, untouched.
        reason: why it was rejected (a decode error, a failed validation rule…).
        source: where it came from: ``file=/x/7078.csv line=12`` or ``topic=k2.trades partition=1 offset=99``.
        key: the original key, if any.
        at: when it was rejected (UTC).
    """

    value: bytes
    reason: str
    source: str
    key: bytes | None = None
    at: datetime = field(default_factory=_now)

    def headers(self) -> list[tuple[str, bytes]]:
        """The Kafka headers that carry reason, source and time."""
        at = self.at if self.at.tzinfo is not None else self.at.replace(tzinfo=UTC)
        return [
            (HEADER_REASON, self.reason.encode()),
            (HEADER_SOURCE, self.source.encode()),
            (HEADER_TIME, at.astimezone(UTC).isoformat().encode()),
        ]

    @classmethod
    def from_message(cls, msg: Any) -> DeadLetter:
        """Read a letter back from a consumed DLQ message (a ``confluent_kafka.Message``).

        Raises:
            DeadLetterFormatError: the message lacks K2's headers or has an unreadable time.
        """
        headers: dict[str, bytes] = {}
        for name, raw in msg.headers() or []:
            headers[name] = raw if isinstance(raw, bytes) else (raw or "").encode()
        where = dict(topic=msg.topic(), partition=msg.partition(), offset=msg.offset())
        missing = [h for h in (HEADER_REASON, HEADER_SOURCE, HEADER_TIME) if h not in headers]
        if missing:
            raise DeadLetterFormatError(
                f"message at {message_source(*where.values())} lacks header(s) {', '.join(missing)}", **where
            )
        try:
            at = datetime.fromisoformat(headers[HEADER_TIME].decode())
        except ValueError as exc:
            raise DeadLetterFormatError(
                f"unreadable {HEADER_TIME} header: {headers[HEADER_TIME]!r}", **where
            ) from exc
        return cls(
            value=msg.value() or b"",
            reason=headers[HEADER_REASON].decode(errors="replace"),
            source=headers[HEADER_SOURCE].decode(errors="replace"),
            key=msg.key(),
            at=at if at.tzinfo is not None else at.replace(tzinfo=UTC),
        )
