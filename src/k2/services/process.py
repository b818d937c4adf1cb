"""Background processes that K2 owns, tracked by pid files that survive crashes.

A pid file records the pid, the process start time *and* its executable: after a reboot or a crash the same pid
may belong to an unrelated process, and K2 must never signal that one. Stopping is always by the
recorded pid, never by process name.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

__all__ = ["OwnedProcess", "free_port", "port_in_use", "spawn", "tail", "wait_until", "write_private"]


@dataclass(frozen=True)
class _Record:
    pid: int
    create_time: float
    exe: str | None = None  # None: a pid file written before K2 recorded the executable


class OwnedProcess:
    """One pid file and the process it names."""

    def __init__(self, pid_file: Path) -> None:
        self.pid_file = pid_file

    def _read(self) -> _Record | None:
        try:
            data = json.loads(self.pid_file.read_text())
            exe = data.get("exe")
            return _Record(
                int(data["pid"]), float(data["create_time"]), exe if isinstance(exe, str) else None
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _live(self, record: _Record) -> psutil.Process | None:
        try:
            proc = psutil.Process(record.pid)
            # 1 s of slack: create_time is rounded differently on some kernels.
            if abs(proc.create_time() - record.create_time) > 1.0 or proc.status() == psutil.STATUS_ZOMBIE:
                return None
            # The same start time within a second is not proof (pids are reused quickly on a
            # busy host): the program must be the one K2 started too. Its executable, not its
            # command line: redis-server rewrites its process title, and the JVM's is briefly empty.
            if record.exe is not None and proc.exe() != record.exe:
                return None
            return proc
        except psutil.Error:
            return None

    @property
    def pid(self) -> int | None:
        record = self._read()
        return record.pid if record and self._live(record) else None

    @property
    def stale(self) -> bool:
        """A pid file whose process is gone (a crash, a reboot, a kill -9)."""
        record = self._read()
        return self.pid_file.exists() and (record is None or self._live(record) is None)

    def record(self, proc: subprocess.Popen[bytes]) -> None:
        process = psutil.Process(proc.pid)
        created, exe = process.create_time(), process.exe()
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.pid_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": proc.pid, "create_time": created, "exe": exe}))
        tmp.replace(self.pid_file)

    def clear(self) -> None:
        self.pid_file.unlink(missing_ok=True)

    def terminate(self, timeout_s: float, sig: signal.Signals = signal.SIGTERM) -> bool:
        """Send ``sig`` (SIGTERM unless the program wants another, e.g. PostgreSQL's fast shutdown is
        SIGINT), wait, then SIGKILL the recorded process. Returns whether one was running."""
        record = self._read()
        proc = self._live(record) if record else None
        if proc is None:
            self.clear()
            return False
        try:
            proc.send_signal(sig)
            proc.wait(timeout=timeout_s)
        except psutil.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        except psutil.NoSuchProcess:
            pass
        self.clear()
        return True


def spawn(
    cmd: list[str],
    *,
    log_path: Path,
    cwd: Path,
    env: dict[str, str] | None = None,
    user: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start a detached process (own session, so a Ctrl-C in the shell does not reach it).

    ``user``: run it as that user (root only; the pid is still the program's own, not a wrapper's).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            cmd,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            user=user,
            group=user and _primary_group(user),
            extra_groups=[] if user else None,
        )


def _primary_group(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_gid


def tail(path: Path, lines: int) -> str:
    """The last lines of a log file, read from the end so a large log costs little."""
    if not path.exists():
        return ""
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        block = min(size, max(4096, lines * 300))
        fh.seek(size - block)
        data = fh.read().decode(errors="replace")
    return "\n".join(data.splitlines()[-lines:])


def wait_until(check: Callable[[], object], timeout_s: float, interval_s: float = 0.2) -> bool:
    """Poll ``check()`` until it returns truthy or the time is up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval_s)
    return False


def await_ready(
    proc: subprocess.Popen[bytes], check: Callable[[], object], timeout_s: float, interval_s: float
) -> bool:
    """Whether ``check()`` succeeded (returned without raising) before the time ran out and while
    ``proc`` lived: the start of every single-process service waits on this."""

    def ready() -> bool:
        if proc.poll() is not None:
            return True
        try:
            check()
            return True
        except Exception:
            return False

    return wait_until(ready, timeout_s, interval_s) and proc.poll() is None


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something already listens there (another Kafka, a stale broker of another data dir)."""
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    """A loopback port nobody listens on now (for tests, benchmarks and throwaway services)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_block(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports (a cluster's nodes use port + 2i)."""
    for _ in range(200):
        base = free_port()
        if base + count <= 65535 and not any(port_in_use(base + i) for i in range(1, count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports found")


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, created that way (no window with wider modes)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    tmp.replace(path)
