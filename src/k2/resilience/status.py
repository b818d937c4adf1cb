"""The pipeline's status file: what ``k2 status`` shows about a running ingest process.

The level, breakers and counters live inside the pipeline process; another process (``k2 status``,
the load test) reads them from a small JSON file the pipeline rewrites at most once a second, and
at once when something an operator cares about changes (a level, a breaker, a stall). Written
atomically (temporary file, then rename), so a reader never sees half a document.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["STATUS_FILE", "StatusFile", "Transition", "read_status", "status_path"]

#: Relative to ``Settings.data_dir``.
STATUS_FILE = Path("status") / "ingest.json"
#: Transitions kept in the file (the log and the metrics keep the full history).
_KEEP = 50

Transition = dict[str, Any]


def status_path(data_dir: Path) -> Path:
    return data_dir / STATUS_FILE


class StatusFile:
    """Rewrites the status document when asked, at most every ``interval_s`` unless forced.

    Args:
        path: the file (its directory is created).
        interval_s: minimum time between two unforced writes.
        clock: monotonic seconds; tests pass a fake.
    """

    def __init__(
        self, path: Path, interval_s: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = path
        self.interval_s = interval_s
        self._clock = clock
        self._written_at: float | None = None
        self.transitions: deque[Transition] = deque(maxlen=_KEEP)

    def record(self, previous: str, level: str, cause: str, detail: str) -> None:
        """Remember one level change (wall-clock time, for people)."""
        self.transitions.append(
            {
                "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "from": previous,
                "to": level,
                "cause": cause,
                "detail": detail,
            }
        )

    def due(self) -> bool:
        return self._written_at is None or self._clock() - self._written_at >= self.interval_s

    def write(self, document: dict[str, Any]) -> None:
        """Write ``document`` (plus the transitions and a timestamp); errors are the caller's to log."""
        self._written_at = self._clock()
        body = {
            **document,
            "pid": os.getpid(),
            "updated_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "transitions": list(self.transitions),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(body, indent=1, default=str))
        os.replace(tmp, self.path)


def read_status(data_dir: Path) -> dict[str, Any] | None:
    """The last status document of the ingest process of ``data_dir``; None if none was written.

    ``alive`` is added: whether the process that wrote it still runs (a stopped pipeline leaves
    its last document behind, which is still worth showing, marked as such).
    """
    path = status_path(data_dir)
    try:
        document: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    document["alive"] = _alive(int(document.get("pid") or 0))
    return document


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
