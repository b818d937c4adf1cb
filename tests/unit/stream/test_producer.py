"""TickProducer without a broker: encoding, keys, counters, failures and closing."""

from __future__ import annotations

import socket
from datetime import UTC, datetime

import polars as pl
import pytest

from k2.config import KafkaSettings
from k2.errors import ConfigError
from k2.observability.metrics import sample
from k2.schemas import EncodeError, frame_schema
from k2.stream.errors import ProduceError, UndeliveredError
from k2.stream.producer import SEND_CHUNK_ROWS, TickProducer, _stamp_ingest, topic_for
from tests.unit.schemas.conftest import random_frame


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again: nothing listens there


def _kafka(**client: str) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers=f"127.0.0.1:{_dead_port()}",
        topic_prefix="unit.",
        client={"message.timeout.ms": "600", "log_level": "0", **client},
    )


def test_topics_of_kinds() -> None:
    kafka = _kafka()
    assert [topic_for(kafka, k) for k in ("trades", "quotes", "instruments", "corporate_actions")] == [
        "unit.trades",
        "unit.quotes",
        "unit.reference",
        "unit.reference",
    ]


def test_ingest_ts_is_stamped_only_where_missing() -> None:
    frame = random_frame("trades", 4).with_columns(
        pl.when(pl.int_range(pl.len()) < 2).then(None).otherwise(pl.col("ingest_ts")).alias("ingest_ts")
    )
    before = datetime.now(UTC)
    stamped = _stamp_ingest(frame)
    assert stamped["ingest_ts"].null_count() == 0
    assert stamped["ingest_ts"][0] >= before.replace(microsecond=0)
    assert stamped["ingest_ts"][2:].equals(frame["ingest_ts"][2:])
    assert _stamp_ingest(frame.drop("ingest_ts"))["ingest_ts"].null_count() == 0


def test_unreachable_broker_counts_sent_then_failed_and_close_reports_loss() -> None:
    kafka = _kafka()
    producer = TickProducer(kafka)
    topic = "unit.trades"
    before = sample("k2_producer_messages_total", {"topic": topic})
    failed_before = sample("k2_producer_errors_total", {"topic": topic})
    assert producer.send("trades", random_frame("trades", 300)) == 300
    assert producer.send("trades", random_frame("trades", 0)) == 0
    stats = producer.stats
    assert (stats.sent, stats.delivered) == (300, 0) and stats.in_flight >= 300
    assert stats.bytes > 300 * 60
    assert sample("k2_producer_messages_total", {"topic": topic}) - before == 300
    assert producer.flush(10.0) == 0  # message.timeout.ms expires every message
    assert producer.stats.failed == 300 and producer.stats.delivered == 0
    assert sample("k2_producer_errors_total", {"topic": topic}) - failed_before == 300
    producer.close()
    with pytest.raises(ProduceError):
        producer.send("trades", random_frame("trades", 1))


def test_close_raises_when_messages_stay_undelivered() -> None:
    producer = TickProducer(_kafka(**{"message.timeout.ms": "3000"}))
    producer.send_raw("unit.trades", b"BHP", b"payload", {"h": "v"})
    with pytest.raises(UndeliveredError) as info:
        producer.close(timeout_s=0.2)
    assert info.value.undelivered == 1
    assert producer.stats.failed == 1 and producer.stats.in_flight == 0  # purged, counted as failed
    producer.close()  # second close is harmless
    assert producer  # an idle producer is truthy even though len() is 0


def test_bad_frame_queues_nothing() -> None:
    producer = TickProducer(_kafka())
    with pytest.raises(EncodeError):
        producer.send("trades", random_frame("trades", 5).drop("price"))
    assert producer.stats.sent == 0 and producer.stats.bytes == 0
    producer.close()


def test_invalid_client_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        TickProducer(_kafka(**{"no.such.option": "1"}))


def test_schema_registry_without_bound_ids_is_refused() -> None:
    kafka = _kafka().model_copy(update={"schema_registry_url": "http://registry:8081"})
    producer = TickProducer(kafka)
    with pytest.raises(ProduceError) as info:
        producer.send("trades", random_frame("trades", 2))
    assert "bind_schema_id" in str(info.value)
    producer.close()


def test_frame_schema_has_the_symbol_key_column() -> None:
    assert "symbol" in frame_schema("trades") and "symbol" in frame_schema("quotes")


def test_only_error_reports_mode_derives_delivered() -> None:
    producer = TickProducer(_kafka(**{"delivery.report.only.error": "true"}))
    producer.send("quotes", random_frame("quotes", 20))
    assert producer.flush(10.0) == 0  # all time out against the dead port
    stats = producer.stats
    assert (stats.sent, stats.failed, stats.delivered) == (20, 20, 0)
    producer.close()


def test_large_frames_are_sent_in_chunks_in_row_order() -> None:
    producer = TickProducer(_kafka())
    frame = random_frame("quotes", SEND_CHUNK_ROWS + 1_000, seed=2)
    assert producer.send("quotes", frame) == frame.height
    assert producer.stats.sent == frame.height
    assert producer.flush(20.0) == 0
    assert producer.stats.failed == frame.height  # every one reported, none dropped silently
    producer.close()
