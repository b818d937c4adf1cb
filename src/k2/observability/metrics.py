"""K2's one Prometheus registry.

Every metric is registered on ``REGISTRY`` (not prometheus-client's global default) so that the
API's ``/metrics`` shows exactly K2's metrics, and tests can read values without interference.
Modules declare their metrics here, next to each other, so the full list is one read.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["REGISTRY", "Counter", "Gauge", "Histogram", "render", "sample", "serve_metrics"]

REGISTRY = CollectorRegistry(auto_describe=True)


def render() -> bytes:
    """The registry in Prometheus text format."""
    return generate_latest(REGISTRY)


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    """Current value of one sample (0.0 when absent); for status displays and tests."""
    value = REGISTRY.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


def serve_metrics(host: str, port: int) -> bool:
    """Serve this process's registry at ``http://host:port/metrics`` from a daemon thread.

    A busy port is logged, not fatal: the ingester's job is the data, and a second ingester on
    one machine must still run (give each its own port to scrape both).
    """
    from prometheus_client import start_http_server

    from k2.observability.logging import get_logger

    try:
        start_http_server(port, addr=host, registry=REGISTRY)
    except OSError as exc:
        get_logger(__name__).warning("metrics endpoint not started", host=host, port=port, error=str(exc))
        return False
    return True
