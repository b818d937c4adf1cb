"""Pid files: K2 only ever signals a process it started itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from k2.services.errors import KafkaDownloadError
from k2.services.jars import KafkaJars
from k2.services.process import OwnedProcess, spawn, tail


def test_records_and_terminates_its_own_process(tmp_path: Path) -> None:
    owned = OwnedProcess(tmp_path / "x.pid")
    proc = spawn(
        [sys.executable, "-c", "import time; time.sleep(60)"], log_path=tmp_path / "x.log", cwd=tmp_path
    )
    owned.record(proc)
    assert owned.pid == proc.pid and not owned.stale
    assert owned.terminate(5)
    proc.wait(5)
    assert owned.pid is None and not owned.pid_file.exists()


def test_dead_pid_is_stale(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    owned = OwnedProcess(tmp_path / "x.pid")
    owned.pid_file.write_text(json.dumps({"pid": proc.pid, "create_time": 1.0}))
    assert owned.stale and owned.pid is None
    assert owned.terminate(1) is False  # nothing signalled, file cleared
    assert not owned.pid_file.exists()


def test_reused_pid_is_not_ours(tmp_path: Path) -> None:
    """A live pid with another start time (pid reuse after a reboot) is never signalled."""
    owned = OwnedProcess(tmp_path / "x.pid")
    me = psutil.Process(os.getpid())
    owned.pid_file.write_text(json.dumps({"pid": me.pid, "create_time": me.create_time() - 3600}))
    assert owned.stale
    assert owned.terminate(1) is False
    assert me.is_running()


def test_garbage_pid_file_is_stale(tmp_path: Path) -> None:
    owned = OwnedProcess(tmp_path / "x.pid")
    owned.pid_file.write_text("not json")
    assert owned.stale and owned.pid is None


def test_tail_reads_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "l.log"
    log.write_text("".join(f"line {i}\n" for i in range(1000)))
    assert tail(log, 3).splitlines() == ["line 997", "line 998", "line 999"]
    assert tail(tmp_path / "missing.log", 3) == ""


def test_jar_manifest_detects_tampering(tmp_path: Path) -> None:
    jars = KafkaJars(tmp_path, "4.1.1")
    jars.libs.mkdir(parents=True)
    (jars.libs / "kafka_2.13-4.1.1.jar").write_bytes(b"original")
    jars._write_manifest()
    jars.verify()
    (jars.libs / "kafka_2.13-4.1.1.jar").write_bytes(b"altered")
    with pytest.raises(KafkaDownloadError, match="checksum"):
        jars.verify()


def test_a_live_process_with_another_command_is_not_ours(tmp_path: Path) -> None:
    """Same pid, same start time, another command (a forged or recycled pid file): never signalled."""
    owned = OwnedProcess(tmp_path / "x.pid")
    me = psutil.Process(os.getpid())
    owned.pid_file.write_text(
        json.dumps({"pid": me.pid, "create_time": me.create_time(), "cmdline": ["redis-server", "x.conf"]})
    )
    assert owned.stale and owned.pid is None
    assert owned.terminate(1) is False
    assert me.is_running()


def test_the_pid_file_records_the_command(tmp_path: Path) -> None:
    owned = OwnedProcess(tmp_path / "x.pid")
    proc = spawn(
        [sys.executable, "-c", "import time; time.sleep(60)"], log_path=tmp_path / "x.log", cwd=tmp_path
    )
    try:
        owned.record(proc)
        assert json.loads(owned.pid_file.read_text())["cmdline"][-1] == "import time; time.sleep(60)"
        assert owned.pid == proc.pid
    finally:
        owned.terminate(5)
