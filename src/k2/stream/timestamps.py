"""The broker's time of each message: what "in the future" is judged against.

Validation used to compare a tick's exchange time with the wall clock of whoever read it. A tick
dead-lettered as "in the future" on its first read was valid when a rebuild read it again later, so
the rebuilt state applied a tick the table never held, and the pipeline and the hybrid tail could
judge the same message differently. A message's timestamp (the producer's create time, or the
broker's append time) is fixed: every read of it, now or in a replay, reaches the same verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import methodcaller

import numpy as np
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

__all__ = ["message_times_us"]

_timestamp = methodcaller("timestamp")  # any object with Message's timestamp() (tests' fakes too)


def message_times_us(messages: Sequence[Message]) -> np.ndarray:
    """Each message's timestamp in µs since the epoch; -1 where the message carries none."""
    out = np.fromiter(
        (ms if kind != TIMESTAMP_NOT_AVAILABLE else -1 for kind, ms in map(_timestamp, messages)),
        dtype=np.int64,
        count=len(messages),
    )
    return np.where(out >= 0, out * 1000, -1)
