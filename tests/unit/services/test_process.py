"""Pid files: K2 only ever signals a process it started itself."""

from __future__ import annotations

import hashlib
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


def _pinned_jars(tmp_path: Path, jars: dict[str, bytes]) -> KafkaJars:
    pins = tmp_path / "pins"
    pins.mkdir()
    (pins / "kafka-4.1.1.sha256").write_text(
        "".join(f"{hashlib.sha256(body).hexdigest()}  {name}\n" for name, body in jars.items())
    )
    found = KafkaJars(tmp_path / "cache", "4.1.1", pins_dir=pins)
    found.libs.mkdir(parents=True)
    for name, body in jars.items():
        (found.libs / name).write_bytes(body)
    found._write_manifest()
    return found


def test_jars_are_checked_against_the_pinned_list(tmp_path: Path) -> None:
    jars = _pinned_jars(tmp_path, {"kafka_2.13-4.1.1.jar": b"original", "dep-1.0.jar": b"dep"})
    jars.verify()
    (jars.libs / "kafka_2.13-4.1.1.jar").write_bytes(b"altered")
    jars._write_manifest()  # a rewritten local manifest changes nothing: the list is in the repository
    with pytest.raises(KafkaDownloadError, match="pinned checksum"):
        jars.verify()
    (jars.libs / "kafka_2.13-4.1.1.jar").write_bytes(b"original")
    (jars.libs / "dep-1.0.jar").unlink()
    with pytest.raises(KafkaDownloadError, match="missing"):
        jars.verify()


def test_only_listed_jars_are_on_the_classpath(tmp_path: Path) -> None:
    jars = _pinned_jars(tmp_path, {"kafka_2.13-4.1.1.jar": b"original", "dep-1.0.jar": b"dep"})
    (jars.libs / "evil-agent.jar").write_bytes(b"not listed")
    jars.verify()  # an extra file is not an error: it is simply never loaded
    entries = jars.classpath.split(os.pathsep)
    assert sorted(Path(e).name for e in entries) == ["dep-1.0.jar", "kafka_2.13-4.1.1.jar"]
    assert "*" not in jars.classpath


def test_an_unlisted_version_is_refused_before_any_download(tmp_path: Path) -> None:
    jars = KafkaJars(tmp_path, "4.9.9")
    with pytest.raises(KafkaDownloadError, match="no pinned jar checksums"):
        jars.ensure()
    assert not jars.root.exists()


def test_the_default_kafka_version_is_pinned_in_the_repository() -> None:
    from k2.config import KafkaSettings

    pins = KafkaJars(Path("/nonexistent"), KafkaSettings().version).pinned()
    assert f"kafka_2.13-{KafkaSettings().version}.jar" in pins and len(pins) > 20
    assert all(len(d) == 64 and int(d, 16) >= 0 for d in pins.values())


def test_a_live_process_of_another_program_is_not_ours(tmp_path: Path) -> None:
    """Same pid, same start time, another program (a forged or recycled pid file): never signalled."""
    owned = OwnedProcess(tmp_path / "x.pid")
    me = psutil.Process(os.getpid())
    owned.pid_file.write_text(
        json.dumps({"pid": me.pid, "create_time": me.create_time(), "exe": "/usr/bin/redis-server"})
    )
    assert owned.stale and owned.pid is None
    assert owned.terminate(1) is False
    assert me.is_running()


def test_the_pid_file_records_the_program(tmp_path: Path) -> None:
    owned = OwnedProcess(tmp_path / "x.pid")
    proc = spawn(
        [sys.executable, "-c", "import time; time.sleep(60)"], log_path=tmp_path / "x.log", cwd=tmp_path
    )
    try:
        owned.record(proc)
        assert json.loads(owned.pid_file.read_text())["exe"] == psutil.Process(proc.pid).exe()
        assert owned.pid == proc.pid
    finally:
        owned.terminate(5)
