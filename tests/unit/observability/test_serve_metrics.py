"""The ingester's own metrics endpoint: what deploy/k2-alerts.yml reads must be scrapeable."""

from __future__ import annotations

import socket
import urllib.request

from k2.observability.metrics import serve_metrics
from k2.services.process import free_port
from k2.state.metrics import state_metrics


def test_the_ingester_serves_the_metrics_the_alert_rules_name() -> None:
    metrics = state_metrics()  # what the sequence checks of k2 ingest register and update
    metrics.gaps_recorded.labels("trades").inc(3)
    metrics.oldest_pending.labels("quotes").set(1.5)
    port = free_port()
    assert serve_metrics("127.0.0.1", port)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'k2_gaps_recorded_total{kind="trades"}' in body
    assert 'k2_gap_oldest_pending_seconds{kind="quotes"} 1.5' in body


def test_a_busy_port_is_logged_not_fatal() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert serve_metrics("127.0.0.1", busy.getsockname()[1]) is False
