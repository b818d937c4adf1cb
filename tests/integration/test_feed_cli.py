"""``k2 feed`` against a real Kafka: what lands on the topics is exactly what the feed says it sent."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition
from typer.testing import CliRunner

from k2.cli import feed_cmd
from k2.config import KafkaSettings, LogSettings, Settings
from k2.feeds.asx import read_asx
from k2.feeds.truth import load_truth
from k2.observability.logging import configure_logging
from k2.schemas import decode_batch


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The root callback points structlog at CliRunner's captured stderr, closed after each invoke:
    point it back at the real one, or later tests that log fail with "I/O operation on closed file"."""
    yield
    configure_logging(LogSettings(), stream=sys.__stderr__)


@pytest.fixture
def app(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    """The root ``k2`` app with ``feed`` registered, configured (by environment) for this test."""
    from k2.cli.app import app as root

    if not any(group.name == "feed" for group in root.registered_groups):
        root.add_typer(feed_cmd.app, name="feed")
    monkeypatch.setenv("K2_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("K2_KAFKA__PORT", str(settings.kafka.port))
    monkeypatch.setenv("K2_KAFKA__CONTROLLER_PORT", str(settings.kafka.controller_port))
    monkeypatch.setenv("K2_KAFKA__TOPIC_PREFIX", settings.kafka.topic_prefix)
    return root


def _invoke(app: typer.Typer, args: list[str]) -> dict[str, Any]:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def _count(kafka: KafkaSettings, name: str) -> int:
    """Messages on a topic: the sum of its partitions' high - low watermarks."""
    topic = kafka.topic(name)
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": f"count-{topic}", "log_level": 0})
    try:
        meta = consumer.list_topics(topic, timeout=10)
        total = 0
        for p in meta.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def _values(kafka: KafkaSettings, name: str, count: int) -> list[Message]:
    topic = kafka.topic(name)
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": f"read-{topic}",
                         "enable.auto.commit": False, "log_level": 0})  # fmt: skip
    try:
        meta = consumer.list_topics(topic, timeout=10)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.topics[topic].partitions])
        out: list[Message] = []
        deadline = time.monotonic() + 60
        while len(out) < count and time.monotonic() < deadline:
            out += [m for m in consumer.consume(10_000, 0.5) if m.error() is None]
        return out
    finally:
        consumer.close()


def test_simulate_lands_exactly_the_truth(app: typer.Typer, settings: Settings, tmp_path: Path) -> None:
    truth_path = tmp_path / "truth.json"
    summary = _invoke(
        app,
        ["feed", "simulate", "--symbols", "5", "--seed", "3", "--count", "20000", "--gap-rate", "0.005",
         "--dup-rate", "0.005", "--reorder-rate", "0.005", "--reset-rate", "0.0005", "--late-fill-fraction", "0.5",
         "--malformed-rate", "0.002", "--truth", str(truth_path), "--json"],
    )  # fmt: skip
    truth = load_truth(truth_path)
    kafka = settings.kafka
    for kind in ("trades", "quotes"):
        t = truth["kinds"][kind]
        assert t["dropped"] and t["duplicate_copies"] and t["late_filled"] and t["malformed"]
        assert _count(kafka, kind) == t["messages"] == t["sent"] + t["duplicate_copies"] + t["malformed"]
        decoded = decode_batch(kind, [m.value() for m in _values(kafka, kind, t["messages"])])
        assert len(decoded.errors) == t["malformed"]
        ids = decoded.frame["message_id"]
        assert ids.len() == t["sent"] + t["duplicate_copies"]
        assert sorted(ids.unique().to_list()) == sorted(t["sent_ids"])
    assert _count(kafka, "dlq") == 0
    assert summary["messages"] == sum(truth["kinds"][k]["messages"] for k in ("trades", "quotes"))
    assert (
        summary["malformed"] == truth["kinds"]["trades"]["malformed"] + truth["kinds"]["quotes"]["malformed"]
    )


def test_a_paced_run_with_a_duration_matches_its_truth(
    app: typer.Typer, settings: Settings, tmp_path: Path
) -> None:
    truth_path = tmp_path / "truth.json"
    began = time.monotonic()
    summary = _invoke(
        app,
        ["feed", "simulate", "--symbols", "AAA,BBB", "--rate", "3000", "--duration", "1", "--dup-rate", "0.01",
         "--truth", str(truth_path), "--json"],
    )  # fmt: skip
    assert time.monotonic() - began < 30
    truth = load_truth(truth_path)
    assert truth["complete"] and truth["symbols"] == ["AAA", "BBB"]
    sent = {k: truth["kinds"][k]["messages"] for k in ("trades", "quotes")}
    assert sum(sent.values()) == summary["messages"] >= 2_000  # at least a second's worth at 3 000/s
    assert {k: _count(settings.kafka, k) for k in sent} == sent


def test_asx_replay_lands_every_row_of_the_small_symbols(
    app: typer.Typer, settings: Settings, asx_data: Path
) -> None:
    summary = _invoke(app, ["feed", "asx", str(asx_data), "--symbols", "DVN,MWR", "--json"])
    kafka = settings.kafka
    assert (_count(kafka, "trades"), _count(kafka, "quotes")) == (232 + 11, 549 + 60)
    assert _count(kafka, "dlq") == 0
    assert _count(kafka, "reference") == summary["reference"] == 2  # two instruments, no corporate action
    expected = read_asx(asx_data, symbols={"DVN", "MWR"}).delivery
    for kind in ("trades", "quotes"):
        frame = decode_batch(
            kind, [m.value() for m in _values(kafka, kind, expected.frame(kind).height)]
        ).frame
        assert sorted(frame["message_id"].to_list()) == sorted(expected.frame(kind)["message_id"].to_list())
    assert summary["messages"] == 243 + 609 + 2


def test_asx_bad_lines_go_to_the_dlq(
    app: typer.Typer, settings: Settings, asx_data: Path, tmp_path: Path
) -> None:
    import shutil

    shutil.copytree(asx_data / "reference", tmp_path / "reference")
    for kind in ("trades", "quotes"):
        (tmp_path / kind).mkdir()
        shutil.copy(asx_data / kind / "3153.csv", tmp_path / kind / "3153.csv")
    with (tmp_path / "trades" / "3153.csv").open("ab") as fh:
        fh.write(b"03/14/2014,10:00:00.000,not-a-price,100,0,,\r\n")
    summary = _invoke(app, ["feed", "asx", str(tmp_path), "--speed", "1000000", "--no-reference", "--json"])
    assert summary["dead_letters"] == 1 and summary["trades"] == 11 and summary["quotes"] == 60
    [letter] = _values(settings.kafka, "dlq", 1)
    headers = dict(letter.headers() or [])
    assert letter.value() == b"03/14/2014,10:00:00.000,not-a-price,100,0,,"
    assert headers["k2.source"].decode() == f"file={tmp_path / 'trades' / '3153.csv'} line=12"
