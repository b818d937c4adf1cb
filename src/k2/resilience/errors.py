"""Errors of the resilience layer: breakers that refuse calls and a spill that could not deliver."""

from __future__ import annotations

from k2.errors import K2Error

__all__ = ["CircuitOpenError", "ResilienceError", "SpillDeliveryError", "SpillFormatError"]


class ResilienceError(K2Error):
    """A protective mechanism (breaker, spill) stopped work on purpose."""


class CircuitOpenError(ResilienceError):
    """A breaker is open (or its half-open probes are taken): the call was not attempted.

    The pipeline answers it by pausing consumption, keeping its uncommitted buffer and retrying the
    commit after ``retry_after`` seconds; nothing is lost and nothing is written twice.
    """

    def __init__(self, name: str, retry_after: float) -> None:
        super().__init__(f"circuit breaker {name!r} is open; retry in {retry_after:.1f}s")
        self.name = name
        self.retry_after = retry_after


class SpillDeliveryError(ResilienceError):
    """Deferred ticks are not yet durable in the spill topic, so their source offsets must not be committed.

    The undelivered messages stay with the ``Spill`` and are produced again by its next ``flush``.
    """

    def __init__(self, undelivered: int) -> None:
        super().__init__(
            f"{undelivered} deferred ticks were not delivered to the spill topics; batch not committed"
        )
        self.undelivered = undelivered


class SpillFormatError(ResilienceError):
    """A message on a spill topic has no readable ``k2.source`` header (it was not written by K2)."""

    def __init__(self, topic: str, partition: int, offset: int, header: str) -> None:
        super().__init__(
            f"spill message at topic={topic} partition={partition} offset={offset} has no readable "
            f"k2.source header (got {header!r})"
        )
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.header = header
