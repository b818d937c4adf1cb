"""The status file: written atomically, throttled, and read back with liveness."""

from __future__ import annotations

import os
from pathlib import Path

from k2.resilience.status import StatusFile, read_status, status_path
from tests.unit.resilience.conftest import FakeClock


def test_written_document_is_read_back_with_transitions_and_liveness(
    tmp_path: Path, clock: FakeClock
) -> None:
    status = StatusFile(status_path(tmp_path), interval_s=1.0, clock=clock)
    assert read_status(tmp_path) is None
    status.record("NORMAL", "GRACEFUL", "lag", "lag 5000 >= 3000 (GRACEFUL)")
    status.write({"degradation": {"level": "GRACEFUL"}, "running": True})
    doc = read_status(tmp_path)
    assert doc is not None
    assert doc["degradation"]["level"] == "GRACEFUL"
    assert doc["transitions"][0]["cause"] == "lag" and doc["transitions"][0]["to"] == "GRACEFUL"
    assert doc["pid"] == os.getpid() and doc["alive"] is True
    assert not list(tmp_path.rglob("*.tmp"))  # written by rename: no half document left behind


def test_writes_are_throttled_until_the_interval_passes(tmp_path: Path, clock: FakeClock) -> None:
    status = StatusFile(status_path(tmp_path), interval_s=1.0, clock=clock)
    assert status.due()
    status.write({})
    assert not status.due()
    clock.advance(1.0)
    assert status.due()


def test_a_dead_writer_is_reported_as_not_alive(tmp_path: Path) -> None:
    path = status_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text('{"pid": 999999999}')
    doc = read_status(tmp_path)
    assert doc is not None and doc["alive"] is False


def test_transitions_are_bounded(tmp_path: Path) -> None:
    status = StatusFile(status_path(tmp_path))
    for i in range(200):
        status.record("NORMAL", "SOFT", "lag", str(i))
    assert len(status.transitions) == 50 and status.transitions[-1]["detail"] == "199"
