"""Errors raised by K2's tick sources (the simulator and the ASX replay).

A malformed *row* or *payload* is data, not an error: it becomes a dead letter or a fault in the
ground truth. These classes are for the cases where a feed cannot run at all.
"""

from __future__ import annotations

from pathlib import Path

from k2.errors import K2Error

__all__ = ["AsxDataError", "FeedConfigError", "FeedError", "TruthFileError"]


class FeedError(K2Error):
    """A feed cannot produce ticks."""


class FeedConfigError(FeedError):
    """A simulator or replay option is out of range.

    Attributes:
        option: the option's name in Python (``gap_rate``; the CLI spells it ``--gap-rate``).
        value: the rejected value.
        reason: what is wrong with it.
    """

    exit_code = 2

    def __init__(self, message: str, *, option: str, value: object) -> None:
        super().__init__(f"{option}: {message} (got {value!r})")
        self.option = option
        self.value = value
        self.reason = message


class AsxDataError(FeedError):
    """The ASX sample directory or one of its reference files is missing or unreadable.

    Attributes:
        path: the file or directory at fault.
    """

    def __init__(self, message: str, *, path: Path) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


class TruthFileError(FeedError):
    """A ground-truth file cannot be written or read back.

    Attributes:
        path: the truth file.
    """

    def __init__(self, message: str, *, path: Path) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
