"""The DLQ tools against the real broker, fed hostile letters: nothing in a letter steers them."""

from __future__ import annotations

from collections.abc import Callable

from confluent_kafka import Consumer, TopicPartition
from typer.testing import CliRunner

from k2.config import Settings
from k2.pipeline.dlq import read_dead_letters, replay_dead_letters
from k2.stream.admin import ensure_topics
from k2.stream.dlq import DeadLetter, message_source
from k2.stream.producer import TickProducer


def _count(settings: Settings, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": settings.kafka.bootstrap, "group.id": "k2-test-count"})
    try:
        meta = consumer.list_topics(topic, timeout=10)
        if topic not in meta.topics:
            return 0
        total = 0
        for p in meta.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def _letter(settings: Settings, topic: str, reason: str, n: int) -> DeadLetter:
    return DeadLetter(b"payload-%d" % n, reason, message_source(topic, 0, n), key=b"BHP")


def test_replay_goes_only_to_k2_topics_skips_foreign_messages_and_keeps_filtered_letters(
    settings: Settings, unique: Callable[[str], str]
) -> None:
    ensure_topics(settings.kafka)
    trades, dlq = settings.kafka.topic("trades"), settings.kafka.topic("dlq")
    producer = TickProducer(settings.kafka)
    producer.send_raw(dlq, b"x", b"no headers at all")  # not a K2 letter: must not abort the tools
    for letter in (
        _letter(settings, "__consumer_offsets", "decode: evil", 1),
        _letter(settings, dlq, "decode: loop", 2),
        _letter(settings, unique("elsewhere"), "decode: foreign", 3),
        _letter(settings, trades, "decode: schema [/] v2", 4),
        _letter(settings, trades, "validation: price", 5),
        _letter(settings, trades, "decode: schema v2", 6),
    ):
        producer.send_dead_letter(letter)
    producer.close()

    malformed: list[Exception] = []
    letters = list(read_dead_letters(settings.kafka, on_malformed=malformed.append))
    assert len(letters) == 6 and len(malformed) == 1

    first = replay_dead_letters(settings.kafka, accept=lambda lt: lt.reason.startswith("decode"))
    assert first.replayed == 2 and first.pending == 1
    assert len(first.refused) == 3 and len(first.malformed) == 1
    assert _count(settings, trades) == 2
    assert _count(settings, dlq) == 7  # nothing was sent back into the DLQ itself

    # The letter the filter left out is still pending; the others are not replayed twice.
    second = replay_dead_letters(settings.kafka)
    assert (second.replayed, second.pending, second.refused, second.malformed) == (1, 0, [], [])
    assert _count(settings, trades) == 3
    third = replay_dead_letters(settings.kafka)
    assert (third.replayed, third.pending) == (0, 0)


def test_dlq_list_shows_reasons_as_text_not_markup(settings: Settings) -> None:
    from k2.cli.app import app as cli

    ensure_topics(settings.kafka)
    producer = TickProducer(settings.kafka)
    trades = settings.kafka.topic("trades")
    producer.send_dead_letter(_letter(settings, trades, "bad CSV field [/] and [bold]x[/bold]", 1))
    producer.send_raw(settings.kafka.topic("dlq"), None, b"stray")
    producer.close()
    env = {"K2_DATA_DIR": str(settings.data_dir), "K2_KAFKA__PORT": str(settings.kafka.port),
           "K2_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix, "COLUMNS": "200"}  # fmt: skip
    result = CliRunner().invoke(cli, ["dlq", "list"], env=env)
    assert result.exit_code == 0, result.output
    assert "[/] and [bold]x[/bold]" in result.output
