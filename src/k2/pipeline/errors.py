"""Errors of the ingest pipeline."""

from __future__ import annotations

from k2.errors import K2Error

__all__ = ["DeadLetterDeliveryError", "PipelineError"]


class PipelineError(K2Error):
    """The pipeline cannot go on; nothing past the last commit was written."""


class DeadLetterDeliveryError(PipelineError):
    """Dead letters could not be delivered, so the batch that produced them is not committed."""

    def __init__(self, undelivered: int) -> None:
        super().__init__(
            f"{undelivered} dead letters were not delivered to the DLQ topic; batch not committed"
        )
        self.undelivered = undelivered
