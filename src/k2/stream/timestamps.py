"""The broker's time of each message: what "in the future" is judged against.

Validation used to compare a tick's exchange time with the wall clock of whoever read it. A tick
dead-lettered as "in the future" on its first read was valid when a rebuild read it again later, so
the rebuilt state applied a tick the table never held, and the pipeline and the hybrid tail could
judge the same message differently. A message's timestamp (the producer's create time, or the
broker's append time) is fixed: every read of it, now or in a replay, reaches the same verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain

import numpy as np
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

__all__ = ["message_times_us"]


def message_times_us(messages: Sequence[Message]) -> np.ndarray:
    """Each message's timestamp in µs since the epoch; -1 where the message carries none.

    On the pipeline's hot path: the (type, ms) pairs are flattened in C (``chain``, ``fromiter``),
    about 150 ns a message here, against 960 ns for a generator unpacking each pair.
    """
    if not messages:
        return np.empty(0, np.int64)
    pairs = map(type(messages[0]).timestamp, messages)  # Message's, or a test fake's of the same shape
    flat = np.fromiter(chain.from_iterable(pairs), np.int64, 2 * len(messages)).reshape(-1, 2)
    return np.where(flat[:, 0] != TIMESTAMP_NOT_AVAILABLE, flat[:, 1] * 1000, -1)
