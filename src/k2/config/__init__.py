"""K2's configuration: the one ``Settings`` object and every section nested in it.

``settings`` builds and loads the root object; ``sections`` holds the per-stage sections,
``hybrid`` and ``resilience`` the two larger ones. Everything here imports only pydantic, so the
rest of K2 may depend on it and it on nothing of K2's but ``k2.errors``.
"""

from __future__ import annotations

from k2.config.hybrid import HybridSettings
from k2.config.resilience import ResilienceSettings
from k2.config.sections import (
    ApiSettings,
    KafkaSettings,
    LakeSettings,
    LogSettings,
    PipelineSettings,
    PostgresSettings,
    ProxySettings,
    RedisSettings,
    S3Settings,
    StateSettings,
)
from k2.config.settings import DEFAULT_CONFIG_FILE, Settings, derive, load_settings

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "ApiSettings",
    "HybridSettings",
    "KafkaSettings",
    "LakeSettings",
    "LogSettings",
    "PipelineSettings",
    "PostgresSettings",
    "ProxySettings",
    "RedisSettings",
    "ResilienceSettings",
    "S3Settings",
    "Settings",
    "StateSettings",
    "derive",
    "load_settings",
]
