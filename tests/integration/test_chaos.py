"""A short slice of the chaos matrix (``make chaos`` runs all of it): real ``k2`` processes SIGKILLed
on both state backends, and an old day re-sent, each checked against exact truth.

The session's own Kafka and Redis serve the runs; each run keeps to its own names.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.cluster import Services
from chaos.run import Backend
from chaos.runner import run_one
from k2.config import Settings


@pytest.fixture
def chaos_services(services: Settings) -> Services:
    return Services(
        services.data_dir,
        ports=(services.kafka.port, services.kafka.controller_port, services.redis.port),
        heap=services.kafka.heap,
    )


@pytest.mark.timeout(600)  # a run is 1-2 min here; a loaded machine doubles that
@pytest.mark.parametrize(
    ("scenario", "backend", "seed"),
    [
        ("kill-ingest", "embedded", 1),  # 5 SIGKILLs while the simulator feeds
        ("kill-ingest", "redis", 1),
        # RIO and DVN, then 2014-03-11 sent again (3 sessions back): ~2 min, so one backend here
        ("resend-day", "redis", 1),
    ],
)
def test_chaos_slice(
    chaos_services: Services, tmp_path: Path, scenario: str, backend: Backend, seed: int
) -> None:
    """No duplicate written, no tick missing, the gaps equal to the truth (``make chaos`` runs all)."""
    outcome = run_one(chaos_services, tmp_path, scenario, backend, seed)
    print(outcome.line())
    assert outcome.ok, outcome.line()
