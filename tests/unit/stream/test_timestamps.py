"""Message times, the reference validation judges "in the future" against."""

from __future__ import annotations

from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME, Message

from k2.stream.timestamps import message_times_us


def test_create_and_append_times_in_microseconds_and_none_as_minus_one() -> None:
    messages = [
        Message(
            topic="t", partition=0, offset=0, value=b"a", timestamp=(TIMESTAMP_CREATE_TIME, 1_700_000_000_123)
        ),
        Message(topic="t", partition=0, offset=1, value=b"b"),  # no timestamp
        Message(topic="t", partition=0, offset=2, value=b"c", timestamp=(TIMESTAMP_LOG_APPEND_TIME, 5)),
    ]
    assert message_times_us(messages).tolist() == [1_700_000_000_123_000, -1, 5_000]


def test_no_messages_no_times() -> None:
    assert message_times_us([]).tolist() == []
