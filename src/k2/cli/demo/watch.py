"""Watching ``k2 ingest`` processes from outside, the way an operator does: their status file.

The pipeline rewrites ``<data_dir>/status/ingest.json`` about once a second; the watcher turns
successive documents into the live rate shown under a progress bar (or as plain lines).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from k2.cli.demo.stage import Proc, Stage
from k2.cli.progress import progress
from k2.config import Settings
from k2.resilience.status import read_status

__all__ = ["IngestWatch", "watch_ingest"]


@dataclass
class IngestWatch:
    """What the watch saw: the last status document of the process, its rates, how it ended."""

    status: dict[str, Any]
    peak_rate: float
    mean_rate: float
    exit_code: int | None


def watch_ingest(
    stage: Stage, proc: Proc, settings: Settings, label: str = "ingest", timeout_s: float = 300
) -> IngestWatch:
    """Show the rows written and the rate until ``proc`` ends; its last status document is returned."""
    samples: deque[tuple[float, int]] = deque(maxlen=8)
    peak = 0.0
    status: dict[str, Any] = {}
    first_write: float | None = None
    last_write = 0.0
    first_rows = 0
    began = time.monotonic()
    with progress(stage.context.console, label, None) as advance:
        while True:
            done = not proc.alive
            doc = read_status(settings.data_dir)
            if doc is not None and doc.get("pid") == proc.popen.pid:
                status = doc
                written = int(doc["stats"]["written"])
                now = time.monotonic()
                if written and first_write is None:
                    first_write, first_rows = now, written
                if samples and written > samples[-1][1]:
                    last_write = now
                samples.append((now, written))
                t0, w0 = samples[0]
                rate = (written - w0) / (now - t0) if now - t0 >= 1.0 else 0.0
                peak = max(peak, rate)
                lag = int(doc["signals"]["lag"])
                level = doc["degradation"]["level"]
                advance(written, f"rows  {rate:,.0f} rows/s  lag {lag:,}  level {level}")
            if done or time.monotonic() - began > timeout_s:
                break
            time.sleep(0.5)
    code = proc.popen.poll()
    if code is None:
        proc.wait(0.1)  # over time: killed, and reported as such by the caller's check
    written = int(status.get("stats", {}).get("written", 0)) if status else 0
    span = (last_write - first_write) if first_write else 0.0
    mean = (written - first_rows) / span if span > 0 else 0.0
    return IngestWatch(status, peak, mean, proc.popen.poll())
