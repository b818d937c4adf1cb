"""The tail's offsets client after a leader change (pure logic: the Kafka clients are stand-ins)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from k2.config import load_settings
from k2.hybrid import consumer as tail
from k2.hybrid.errors import TailReadError


class Future:
    def __init__(self, offset: int | None, error: int | None) -> None:
        self.offset, self.error = offset, error

    def result(self) -> Any:
        if self.error is not None:
            raise KafkaException(KafkaError(self.error))
        return SimpleNamespace(offset=self.offset)


def _tail(monkeypatch: pytest.MonkeyPatch, answers: list[int | None]) -> tuple[tail.KafkaTail, list[Any]]:
    """A KafkaTail whose n-th AdminClient answers 42, or fails with the n-th error code."""
    made: list[Any] = []

    def admin(config: dict[str, Any]) -> Any:
        error = answers[len(made)] if len(made) < len(answers) else None
        client = SimpleNamespace(
            list_offsets=lambda request, request_timeout: {tp: Future(42, error) for tp in request}
        )
        made.append(client)
        return client

    monkeypatch.setattr(tail, "AdminClient", admin)
    monkeypatch.setattr(tail, "Consumer", lambda config: SimpleNamespace())
    settings = load_settings()
    return tail.KafkaTail(settings.kafka, settings.hybrid), made


def test_a_stale_leader_epoch_renews_the_client_once(monkeypatch: pytest.MonkeyPatch) -> None:
    kafka_tail, made = _tail(monkeypatch, [KafkaError.FENCED_LEADER_EPOCH])
    assert kafka_tail.high_watermarks([("k2.trades", 1)]) == {("k2.trades", 1): 42}
    assert len(made) == 2  # the stale client, then a fresh one


def test_a_fresh_client_that_still_fails_is_a_tail_read_error(monkeypatch: pytest.MonkeyPatch) -> None:
    kafka_tail, made = _tail(monkeypatch, [KafkaError.FENCED_LEADER_EPOCH, KafkaError.FENCED_LEADER_EPOCH])
    with pytest.raises(TailReadError, match=r"k2\.trades\[1\]"):
        kafka_tail.high_watermarks([("k2.trades", 1)])
    assert len(made) == 2  # renewed once, not in a loop


def test_other_errors_and_elections_do_not_renew_the_client(monkeypatch: pytest.MonkeyPatch) -> None:
    kafka_tail, made = _tail(monkeypatch, [KafkaError.TOPIC_AUTHORIZATION_FAILED])
    with pytest.raises(TailReadError):
        kafka_tail.high_watermarks([("k2.trades", 1)])
    assert len(made) == 1


def test_an_election_in_progress_does_not_renew_the_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """NOT_LEADER is an election under way: the retries wait for it, a new client would not help."""
    kafka_tail, made = _tail(monkeypatch, [KafkaError.NOT_LEADER_FOR_PARTITION])
    with pytest.raises(TailReadError):
        kafka_tail.high_watermarks([("k2.trades", 1)])
    assert len(made) == 1


def test_the_client_is_renewed_at_most_every_ten_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    stale = KafkaError.FENCED_LEADER_EPOCH
    kafka_tail, made = _tail(monkeypatch, [stale, stale, stale])
    with pytest.raises(TailReadError):  # renewed once, and the fresh client fails too
        kafka_tail.high_watermarks([("k2.trades", 1)])
    with pytest.raises(TailReadError):  # within 10 s: no second renewal
        kafka_tail.high_watermarks([("k2.trades", 1)])
    assert len(made) == 2


def test_no_leader_in_the_cached_metadata_renews_the_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """ "No leaders found" (_NOENT) for minutes after an election: the stale client is replaced."""
    kafka_tail, made = _tail(monkeypatch, [KafkaError._NOENT])
    assert kafka_tail.high_watermarks([("k2.trades", 1)]) == {("k2.trades", 1): 42}
    assert len(made) == 2
