"""Faults that are not a SIGKILL: an unwritable warehouse and a locked catalog database.

We run as root, where ``chmod`` stops no write. The immutable attribute does (``chattr +i``, which
needs CAP_LINUX_IMMUTABLE and a file system that supports it, such as ext4 or xfs): an immutable
directory refuses new entries and removals, even to root, so no data or metadata file can be
written anywhere in the warehouse while it is set. Reading still works.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["FaultUnavailableError", "lock_catalog", "warehouse_frozen"]


class FaultUnavailableError(Exception):
    """This machine cannot inject the fault (say so, rather than pretend it was injected)."""


def _chattr(flag: str, path: Path) -> None:
    subprocess.run(["chattr", "-R", flag, str(path)], check=True, capture_output=True)


@contextmanager
def warehouse_frozen(warehouse: Path) -> Iterator[None]:
    """Every directory and file of ``warehouse`` immutable for the ``with`` block.

    Raises:
        FaultUnavailableError: no ``chattr``, or the file system or capabilities refuse it.
    """
    if shutil.which("chattr") is None:
        raise FaultUnavailableError("chattr is not installed (Debian: e2fsprogs)")
    try:
        _chattr("+i", warehouse)
    except subprocess.CalledProcessError as exc:
        _chattr_undo(warehouse)
        raise FaultUnavailableError(f"chattr +i refused: {exc.stderr.decode().strip()}") from exc
    probe = warehouse / ".chaos-probe"
    try:
        try:
            probe.touch()
        except OSError:
            pass  # the point: root cannot write here now
        else:
            probe.unlink()
            raise FaultUnavailableError(f"{warehouse} is still writable with the immutable attribute set")
        yield
    finally:
        _chattr_undo(warehouse)


def _chattr_undo(warehouse: Path) -> None:
    # a file written between "+i" reaching its parent and the probe is harmless; "-i" must cover all
    subprocess.run(["chattr", "-R", "-i", str(warehouse)], check=False, capture_output=True)


def lock_catalog(db: Path, seconds: float) -> None:
    """Hold an exclusive lock on the SQLite catalog (``BEGIN EXCLUSIVE``) for ``seconds``, then let go.

    Every reader and writer of the catalog waits for the lock or fails on it: a commit, a table load.
    """
    conn = sqlite3.connect(db, timeout=30.0, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        time.sleep(seconds)
        conn.execute("ROLLBACK")
    finally:
        conn.close()
