"""``k2 demo --fast`` end to end: a real ``k2`` process on the session's Kafka and Redis, every chapter passing.

The services are the session's, started by K2's launcher (``tests/conftest.py``); the demo's own
``k2 services up`` finds them running. Its output goes to a pipe, so it must be plain text.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from k2.config import Settings
from k2.services.process import free_port

CHAPTERS = (
    "Position",
    "Ingest",
    "Store",
    "Monitor",
    "Proof",
    "Query",
    "Backpressure",
    "Resilience",
    "Scale",
    "Cost",
)


def test_k2_demo_fast_passes_every_chapter(services: Settings, services_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("K2_")}
    env.update(
        K2_DATA_DIR=str(services_dir),
        K2_KAFKA__PORT=str(services.kafka.port),
        K2_KAFKA__CONTROLLER_PORT=str(services.kafka.controller_port),
        K2_KAFKA__HEAP=services.kafka.heap,
        K2_REDIS__PORT=str(services.redis.port),
        K2_API__PORT=str(free_port()),
    )
    done = subprocess.run(
        [sys.executable, "-m", "k2.cli", "demo", "--fast"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=services_dir,
    )
    out = done.stdout
    assert done.returncode == 0, f"{out}\n--- stderr (tail) ---\n{done.stderr[-4000:]}"
    assert "\x1b[" not in out, "control codes in piped output"
    for number, name in enumerate(CHAPTERS, 1):
        assert f"{number}/{len(CHAPTERS)}  {name}" in out
    assert "FAIL" not in out and "demo passed" in out
    assert "dashboard: http://127.0.0.1:" in out
