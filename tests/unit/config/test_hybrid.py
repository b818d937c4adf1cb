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


def test_the_fingerprint_follows_the_values_not_their_spelling() -> None:
    base = HybridSettings()
    assert base.fingerprint() == HybridSettings().fingerprint() and len(base.fingerprint()) == 16
    assert HybridSettings(max_minutes=60).fingerprint() == HybridSettings(max_minutes=60.0).fingerprint()
    assert HybridSettings.model_validate({"routing": "all", "max_minutes": 60}).fingerprint() == (
        HybridSettings.model_validate({"max_minutes": 60.0, "routing": "all"}).fingerprint()
    )
    assert HybridSettings(max_minutes=60).fingerprint() != base.fingerprint()
    assert HybridSettings(consistency="cached").fingerprint() != base.fingerprint()


def test_differences_name_each_field_that_differs() -> None:
    own = HybridSettings(max_minutes=60, consistency="cached")
    other = HybridSettings(max_minutes=1440, read_timeout_s=3)
    assert own.differences(other) == {
        "max_minutes": {"own": 60.0, "other": 1440.0},
        "consistency": {"own": "cached", "other": "watermark"},
        "read_timeout_s": {"own": 2.0, "other": 3.0},
    }
    assert own.differences(own) == {}
