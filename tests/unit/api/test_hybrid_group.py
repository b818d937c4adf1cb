"""The replica group's hybrid settings document: what is stored in Redis, and what is refused.

Pure logic only; the Redis side (SET NX, adopt, publish, a malformed value at start-up, Redis
down) is tested against a real Redis in tests/integration/test_api_hybrid_group.py.
"""

from __future__ import annotations

import json

import pytest

from k2.api.errors import GroupSettingsError
from k2.api.hybrid_group import GroupDocument, HybridConfig
from k2.config import HybridSettings, load_settings

KEY = "k2:api:hybrid"


def test_a_document_round_trips_and_carries_a_readable_fingerprint() -> None:
    settings = HybridSettings(max_minutes=60, consistency="cached")
    doc = GroupDocument.of(settings)
    stored = json.loads(doc.encode())
    assert stored["version"] == 1 and stored["fingerprint"] == settings.fingerprint()
    assert stored["settings"]["max_minutes"] == 60.0 and ":" in stored["published_by"]
    back = GroupDocument.decode(doc.encode().encode(), KEY)
    assert back == doc


def test_readers_recompute_the_fingerprint_and_accept_defaults_left_out() -> None:
    # A hand-written value (redis-cli SET) with a stale fingerprint and only some fields.
    raw = json.dumps({"version": 1, "fingerprint": "stale", "settings": {"max_minutes": 30}})
    doc = GroupDocument.decode(raw, KEY)
    assert doc.settings == HybridSettings(max_minutes=30)
    assert doc.published_by == "?"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe", "not JSON"),
        ("max_minutes=60", "not JSON"),
        ("[1, 2]", "JSON list, not an object"),
        (json.dumps({"settings": {}}), "version is None"),
        (json.dumps({"version": 2, "settings": {}}), "version is 2"),
        (json.dumps({"version": 1}), "settings are invalid"),
        (json.dumps({"version": 1, "settings": {"max_minutes": -1}}), "max_minutes: Input should be greater"),
        (json.dumps({"version": 1, "settings": {"consistency": "eventual"}}), "consistency"),
        (json.dumps({"version": 1, "settings": {"from_the_future": 1}}), "from_the_future: Extra inputs"),
    ],
)
def test_a_malformed_value_is_a_clear_error(raw: bytes | str, reason: str) -> None:
    with pytest.raises(GroupSettingsError) as caught:
        GroupDocument.decode(raw, KEY)
    message = str(caught.value)
    assert reason in message, message
    assert KEY in message and "k2 config hybrid publish" in message
    assert caught.value.exit_code == 2 and caught.value.key == KEY


@pytest.mark.parametrize(
    ("api", "shared"),
    [
        ({}, False),
        ({"rate_limit_backend": "redis"}, True),
        ({"rate_limit_backend": "redis", "shared_hybrid": "off"}, False),
        ({"shared_hybrid": "redis"}, True),
    ],
)
def test_replicas_share_hybrid_settings_when_they_share_rate_limits_or_are_told_to(
    api: dict[str, str], shared: bool
) -> None:
    assert load_settings(api=api).api.shares_hybrid is shared


def test_local_settings_report_themselves_without_redis() -> None:
    config = HybridConfig(HybridSettings(max_minutes=60))
    assert config.check() == "ok"
    assert config.status() == {
        "status": "ok", "source": "local", "fingerprint": HybridSettings(max_minutes=60).fingerprint()
    }  # fmt: skip
