"""Property-based requests from the app's own OpenAPI document, against the session's real lake.

* never a 5xx, whatever is sent;
* every request the schema allows is accepted (2xx, or 404 for a snapshot that does not exist):
  the schema does not lie. Cases first obey the rules between parameters that OpenAPI cannot
  state (``benchmarks.fuzz_hooks``, the same function ``make fuzz`` applies);
* every request the schema forbids is refused with a 4xx that says why.

Bounded: a few examples per operation. /health is left out: it waits for Kafka, which unit tests
do not run (tests/integration/test_api.py covers it against the real broker). The operations are
driven from inside one test (rather than schemathesis' pytest plugin) because the app needs this
session's lake fixture.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from benchmarks.fuzz_hooks import SESSION_PATHS, obey_cross_rules

EXAMPLES = 12
TAGS = ("ticks", "analytics", "time travel", "replay", "data quality", "operations")


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    """Streams end within seconds (api.stream_max_s): a valid slow replay is a long one."""
    return make_client(rate_limit_per_minute=100_000, stream_max_s=3)


def _operations(client: TestClient) -> list[Any]:
    # The historical API's operations; live routes (tag "live", k2.hybrid) need a running Kafka.
    schema = (
        schemathesis.openapi.from_asgi("/openapi.json", client.app)
        .exclude(path="/health")
        .include(tag=list(TAGS))
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    return operations


def _drive(
    operations: list[Any], mode: GenerationMode, check: Callable[[Any, Any], None], examples: int = EXAMPLES
) -> None:
    seen: dict[str, int] = {}
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=examples,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            phases=[Phase.explicit, Phase.generate],  # no shrinking: the message shows the case
        )
        def run(case: Any) -> None:
            if mode == GenerationMode.POSITIVE and case.query:
                case.query = obey_cross_rules(case.query, sessions=case.operation.path in SESSION_PATHS)
            response = case.call()
            seen[case.operation.label] = seen.get(case.operation.label, 0) + 1
            check(case, response)

        try:
            run()
        except Unsatisfiable:  # nothing to break: /metrics, /v1/status (only the optional key header)
            assert mode == GenerationMode.NEGATIVE and not _breakable(operation)
            continue
        assert seen.get(operation.label, 0) > 0, operation.label
    assert len(seen) >= len(operations) - sum(not _breakable(o) for o in operations)


def _breakable(operation: Any) -> bool:
    """A parameter a request can get wrong: any but an optional header that takes any string."""
    return any(
        p["in"] != "header" or p.get("required") for p in operation.definition.raw.get("parameters", [])
    )


def test_no_server_errors(client: TestClient) -> None:
    def check(case: Any, response: Any) -> None:
        assert response.status_code < 500, f"{case.operation.label} {case.query}: {response.text[:300]}"

    _drive(_operations(client), GenerationMode.POSITIVE, check)


def test_schema_valid_requests_are_accepted(client: TestClient) -> None:
    def check(case: Any, response: Any) -> None:
        assert response.status_code in (200, 404), (
            f"{case.operation.label} {case.query}: {response.status_code} {response.text[:300]}"
        )
        case.validate_response(response, checks=[positive_data_acceptance])

    _drive(_operations(client), GenerationMode.POSITIVE, check)


def test_schema_invalid_requests_are_refused(client: TestClient) -> None:
    def check(case: Any, response: Any) -> None:
        assert response.status_code < 500, f"{case.operation.label} {case.query}: {response.text[:300]}"
        # schemathesis' own judgement: a 4xx, unless the case is valid after all (e.g. only an
        # unknown query parameter was added, which the API ignores)
        case.validate_response(response, checks=[negative_data_rejection])
        if response.status_code >= 400:
            assert response.json()["detail"]

    _drive(_operations(client), GenerationMode.NEGATIVE, check)
