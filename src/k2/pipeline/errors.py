"""Errors of the ingest pipeline."""

from __future__ import annotations

from k2.errors import K2Error

__all__ = ["ConsumerFencedError", "DeadLetterDeliveryError", "PipelineError"]


class PipelineError(K2Error):
    """The pipeline cannot go on; nothing past the last commit was written."""


class DeadLetterDeliveryError(PipelineError):
    """Dead letters could not be delivered, so the batch that produced them is not committed."""

    def __init__(self, undelivered: int) -> None:
        super().__init__(
            f"{undelivered} dead letters were not delivered to the DLQ topic; batch not committed"
        )
        self.undelivered = undelivered


class ConsumerFencedError(PipelineError):
    """The group keeps fencing this process's consumer: another member holds its instance id."""

    def __init__(self, renewals: int, window_s: float, instance_id: str | None, error: str) -> None:
        who = f"group.instance.id {instance_id!r}" if instance_id else "this member"
        super().__init__(
            f"the Kafka consumer hit a fatal error {renewals} times in {window_s:.0f} s ({error}); "
            f"is another ingester running with {who}? Each process needs its own "
            "K2_PIPELINE__INSTANCE_ID. Nothing past the last commit was written; a restart resumes there."
        )
