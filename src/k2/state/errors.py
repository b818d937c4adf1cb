"""Errors of the sequence and dedup state package."""

from __future__ import annotations

from k2.errors import K2Error

__all__ = ["InvalidBatchError", "StaleStateError", "StateCorruptError", "StateError", "StateStoreError"]


class StateError(K2Error):
    """Sequence or dedup state could not be read, computed or written."""


class InvalidBatchError(StateError):
    """A batch handed to the tracker breaks its preconditions (missing column, sequence < 1, null)."""

    def __init__(self, message: str, *, column: str) -> None:
        super().__init__(message)
        self.column = column


class StateStoreError(StateError):
    """The backing store (SQLite file or Redis) failed; the cause is chained."""

    def __init__(self, message: str, *, backend: str) -> None:
        super().__init__(message)
        self.backend = backend


class StaleStateError(StateError):
    """A commit was fenced off: the stored token is not the one this writer expected.

    Raised when a consumer that lost its partition in a rebalance (or a second process on the same
    partition) tries to commit: nothing of that commit is written.
    """

    def __init__(self, *, topic: str, partition: int, expected: int | None, actual: int | None) -> None:
        super().__init__(
            f"state of {topic}[{partition}] moved on: expected token {expected}, store has {actual}; "
            "another consumer owns this partition now (reload the state before committing again)"
        )
        self.topic = topic
        self.partition = partition
        self.expected = expected
        self.actual = actual


class StateCorruptError(StateError):
    """The embedded state file is damaged: not a transient failure, so it is never retried.

    Not a ``StateStoreError`` on purpose: the pipeline retries those (a locked file, a full disk
    that frees up), and a retry cannot mend a corrupt file; ingest stops and says what to do.

    Attributes:
        path: the damaged file.
    """

    exit_code = 3

    def __init__(self, path: object, detail: str) -> None:
        super().__init__(
            f"state file {path} is corrupt ({detail}): restore it from a backup, or move it aside to "
            "start with empty sequence and dedup state (ticks already in the lake are then judged anew)"
        )
        self.path = path
