"""A short slice of the chaos matrix (``make chaos`` runs all of it): real ``k2`` processes SIGKILLed,
and a day re-sent, on both state backends, each checked against exact truth.

The session's own Kafka and Redis serve the runs; each run keeps to its own names.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.cluster import Services
from chaos.run import Backend
from chaos.runner import run_one
from k2.config import Settings

BACKENDS: list[Backend] = ["embedded", "redis"]


@pytest.fixture
def chaos_services(services: Settings) -> Services:
    return Services(
        services.data_dir,
        ports=(services.kafka.port, services.kafka.controller_port, services.redis.port),
        heap=services.kafka.heap,
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("scenario", "seed"),
    [
        ("kill-ingest", 1),  # 5 SIGKILLs while the simulator feeds
        ("resend-day", 1),  # RIO and DVN, then 2014-03-11 sent again (3 sessions back)
    ],
)
def test_chaos_slice(
    chaos_services: Services, tmp_path: Path, scenario: str, seed: int, backend: Backend
) -> None:
    """No duplicate written, no tick missing, the gaps equal to the truth (``make chaos`` runs all)."""
    outcome = run_one(chaos_services, tmp_path, scenario, backend, seed)
    print(outcome.line())
    assert outcome.ok, outcome.line()
