from __future__ import annotations

import pytest
from pydantic import ValidationError

from k2.config.hybrid import HybridSettings


def test_defaults_are_valid_and_frozen() -> None:
    s = HybridSettings()
    assert s.consistency == "watermark" and s.routing == "auto"
    assert s.max_tail_messages >= 1000 and s.max_tail_bytes >= 1024 * 1024
    with pytest.raises(ValidationError):
        s.max_tail_messages = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    "bad", [{"max_tail_messages": 10}, {"routing": "hash"}, {"consistency": "eventual"}, {"unknown": 1}]
)
def test_bad_values_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        HybridSettings(**bad)  # type: ignore[arg-type]
