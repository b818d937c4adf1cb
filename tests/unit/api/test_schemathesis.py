"""Property-based requests from the app's own OpenAPI document: never a 5xx.

Bounded: a few examples per operation. /health is left out: it waits for Kafka, which unit tests
do not run (tests/integration/test_api.py covers it against the real broker). The operations are
driven from inside one test (rather than schemathesis' pytest plugin) because the app needs this
session's lake fixture.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

EXAMPLES = 12
TAGS = ("ticks", "analytics", "time travel", "replay", "data quality", "operations")


def test_no_server_errors(client: TestClient) -> None:
    # The historical API's operations; live routes (tag "live", k2.hybrid) need a running Kafka.
    schema = (
        schemathesis.openapi.from_asgi("/openapi.json", client.app)
        .exclude(path="/health")
        .include(tag=list(TAGS))
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    seen: dict[str, int] = {}
    for operation in operations:
        label = operation.label

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def run(case: Any) -> None:
            response = case.call()
            seen[case.operation.label] = seen.get(case.operation.label, 0) + 1
            assert response.status_code < 500, f"{case.operation.label} {case.query}: {response.text[:300]}"

        run()
        assert seen.get(label, 0) > 0, label
    assert len(seen) == len(operations)
