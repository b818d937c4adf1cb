"""The native consumer's Python side: joined payloads, the column batch, and the choice of consumer."""

from __future__ import annotations

import numpy as np
import pytest
from confluent_kafka import KafkaError, Message
from polars.testing import assert_frame_equal

from k2.pipeline import consumer as consumer_module
from k2.pipeline import native
from k2.pipeline.consumer import last_offsets, use_native
from k2.schemas import decode_batch, encode_batch
from k2.schemas.joined import JoinedPayloads
from tests.unit.pipeline.fakes import as_native, ticks


def joined(values: list[bytes]) -> JoinedPayloads:
    return JoinedPayloads(
        np.frombuffer(b"".join(values), np.uint8), np.cumsum([len(v) for v in values], dtype=np.int64)
    )


def test_joined_payloads_index_like_the_list_they_join() -> None:
    values = [b"abc", b"", b"xy", b"\x00\x01\x02\x03"]
    j = joined(values)
    assert len(j) == 4 and list(j) == values and j[-1] == values[-1] and j[1:3] == values[1:3]
    assert b"xy" in j and b"" in j and b"zz" not in j and b"abcd" not in j and "xy" not in j
    with pytest.raises(IndexError):
        j[4]
    assert list(j.take(np.array([3, 0]))) == [values[3], values[0]]
    assert list(j.take(np.array([], np.int64))) == []
    assert list(joined([])) == [] and b"" not in joined([])


def test_decoding_joined_payloads_equals_decoding_the_list_bad_payloads_included() -> None:
    frame = ticks(["BHP", "CBA"] * 50, list(range(100)))
    payloads = encode_batch("trades", frame)
    payloads[7] = b"\x00garbage"
    payloads[42] = payloads[42][:-3]
    payloads[99] = b""
    from_list, from_joined = decode_batch("trades", payloads), decode_batch("trades", joined(payloads))
    assert_frame_equal(from_joined.frame, from_list.frame)
    assert from_joined.errors == from_list.errors and [i for i, _ in from_list.errors] == [7, 42, 99]


def test_a_native_batch_reads_back_every_column() -> None:
    messages = [
        Message(topic="a", partition=1, offset=10, value=b"v1", key=b"k1", timestamp=(1, 1_000)),
        Message(topic="b", partition=0, offset=5, value=None, key=None),
        Message(topic="a", partition=1, offset=11, value=b"v3", key=b"", timestamp=(2, 2_000)),
        Message(topic="a", partition=2, offset=3, value=b"", key=b"k4", timestamp=(1, 3_000)),
        Message(topic="a", partition=0, offset=0, error=KafkaError(KafkaError._FATAL, "fenced", fatal=True)),
    ]
    batch = as_native(messages)
    assert len(batch) == 5 and batch.messages == 4 and bool(batch)
    assert batch.topics == ["a", "b"]
    rows = batch.rows_of("a")
    assert rows is not None and rows.tolist() == [0, 2, 3]
    assert list(batch.payloads(rows)) == [b"v1", b"v3", b""]
    assert list(batch.payloads(batch.rows_of("b"))) == [b""]  # a tombstone: no bytes
    assert [batch.key(i) for i in range(4)] == [b"k1", b"", b"", b"k4"]
    assert batch.times_us(None).tolist() == [1_000_000, -1, 2_000_000, 3_000_000]
    assert last_offsets(batch) == {("a", 1): 11, ("a", 2): 3, ("b", 0): 5}
    assert last_offsets(messages) == last_offsets(batch)
    [error] = batch.errors
    assert error.fatal() and error.code() == KafkaError._FATAL


def test_a_single_topic_batch_is_read_whole() -> None:
    batch = as_native([Message(topic="t", partition=0, offset=i, value=b"x") for i in range(3)])
    assert batch.rows_of("t") is None and list(batch.payloads(None)) == [b"x"] * 3


def test_the_consumer_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(native, "available", lambda: False)
    assert not use_native("auto") and not use_native("python")
    with pytest.raises(RuntimeError, match="K2_PIPELINE__CONSUMER=python"):
        use_native("native")
    monkeypatch.setattr(native, "available", lambda: True)
    assert use_native("auto") and use_native("native") and not use_native("python")
    assert consumer_module.native is native


def test_librdkafka_properties_are_passed_as_strings_without_callbacks() -> None:
    config = native._config({"a": 1, "b": True, "c": False, "d": "x", "error_cb": print})
    assert config == {"a": "1", "b": "true", "c": "false", "d": "x"}


def test_a_fatal_error_is_found_in_either_batch() -> None:
    from k2.pipeline.consumer import fatal_error

    fenced = KafkaError(KafkaError._FATAL, "fenced", fatal=True)
    plain = [Message(topic="t", partition=0, offset=1, value=b"x")]
    transport = [*plain, Message(topic="t", partition=0, offset=2, error=KafkaError(KafkaError._TRANSPORT))]
    assert fatal_error(plain) is None and fatal_error(transport) is None
    assert fatal_error([*transport, Message(error=fenced)]) is fenced
    assert fatal_error(as_native(plain)) is None
    found = fatal_error(as_native([*plain, Message(error=fenced)]))
    assert found is not None and found.fatal()
