"""The one K2 configuration object.

Settings come from, in order of precedence: keyword arguments, ``K2_*`` environment variables
(``__`` marks nesting: ``K2_KAFKA__PORT=29092``), a TOML file (``k2.toml`` in the working directory,
or the path in ``K2_CONFIG`` / ``--config``), then defaults that work on one machine. The object is
built once at the edge (the CLI callback, the API app factory) and passed down; components take
their own section and never read the environment themselves.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from k2.errors import ConfigError
from k2.hybrid.settings import HybridSettings  # imports only pydantic: no cycle
from k2.resilience.settings import ResilienceSettings  # imports only pydantic: no cycle

__all__ = [
    "ApiSettings",
    "HybridSettings",
    "KafkaSettings",
    "LakeSettings",
    "LogSettings",
    "PipelineSettings",
    "RedisSettings",
    "ResilienceSettings",
    "Settings",
    "StateSettings",
    "load_settings",
]

DEFAULT_CONFIG_FILE = Path("k2.toml")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Section):
    """Kafka: a local broker that K2 launches, or an external cluster."""

    bootstrap_servers: str | None = Field(
        None, description="External cluster 'host:port[,host:port]'. Unset: K2 runs a local broker."
    )
    port: int = Field(19092, ge=1, le=65535, description="Client port of the local broker.")
    controller_port: int = Field(19093, ge=1, le=65535, description="KRaft controller port.")
    version: str = Field("4.1.1", pattern=r"^4\.\d+\.\d+$", description="Apache Kafka 4.x version.")
    heap: str = Field("768m", pattern=r"^\d+[mg]$", description="Broker JVM heap, e.g. 768m or 1g.")
    topic_prefix: str = Field("k2.", pattern=r"^[A-Za-z0-9._-]*$")
    partitions: int = Field(4, ge=1, le=1024)
    replication_factor: int = Field(1, ge=1, le=16)
    retention_ms: int = Field(
        7 * 24 * 3600 * 1000, ge=-1, description="Topic retention.ms of every topic K2 creates."
    )
    retention_bytes: int = Field(
        -1, ge=-1, description="Topic retention.bytes per partition (-1: bounded by time only)."
    )
    segment_ms: int = Field(
        3600 * 1000,
        ge=60_000,
        description="segment.ms: retention drops whole segments, so a quiet topic rolls one hourly "
        "instead of keeping data up to one segment (Kafka's default: 7 days) past retention_ms.",
    )
    schema_registry_url: str | None = Field(
        None, description="Confluent schema registry; when set, payloads use Confluent framing."
    )
    client: dict[str, str] = Field(
        default_factory=dict, description="Extra librdkafka options, native dotted names."
    )

    @property
    def managed(self) -> bool:
        return self.bootstrap_servers is None

    @property
    def bootstrap(self) -> str:
        return self.bootstrap_servers or f"127.0.0.1:{self.port}"

    def topic(self, name: str) -> str:
        """Full topic name for a logical stream ('trades' -> 'k2.trades')."""
        return f"{self.topic_prefix}{name}"


class RedisSettings(_Section):
    """Redis: a local redis-server that K2 launches, or an external one."""

    url: SecretStr | None = Field(
        None, description="External Redis URL. Unset: K2 runs a local redis-server."
    )
    port: int = Field(16379, ge=1, le=65535, description="Port of the local redis-server.")
    key_prefix: str = Field("k2:", description="Prefix of every key K2 writes.")
    password_file: Path | None = Field(
        None,
        description="The local redis-server's password, generated on its first start (mode 0600). "
        "Unset: <data_dir>/services/redis/password.",
    )

    @property
    def managed(self) -> bool:
        return self.url is None

    @property
    def effective_url(self) -> str:
        if self.url:
            return self.url.get_secret_value()
        password = self.local_password()
        auth = f":{password}@" if password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def local_password(self) -> str | None:
        """The local redis-server's password, once K2 has started it (None before)."""
        if self.password_file is None:
            return None
        try:
            return self.password_file.read_text().strip() or None
        except OSError:
            return None


class LakeSettings(_Section):
    """Iceberg catalog and warehouse."""

    catalog_uri: SecretStr | None = Field(
        None, description="SQLAlchemy URI of the SQL catalog (sqlite:/// or postgresql+psycopg2://)."
    )
    warehouse: str | None = Field(None, description="Warehouse location. Unset: <data_dir>/warehouse.")
    catalog_name: str = Field("k2", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    namespace: str = Field("k2", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    commit_interval_s: float = Field(1.0, gt=0, le=3600, description="Commit at least this often.")
    commit_rows: int = Field(200_000, ge=1, description="Commit when this many rows are buffered.")
    keep_snapshots: int = Field(50, ge=1, description="Newest snapshots always kept (the dense window).")
    dense_minutes: float = Field(
        2.0,
        ge=0,
        description="Every snapshot still current this recently is kept, so a query that began on it "
        "can finish reading its files.",
    )
    time_travel_hours: float = Field(
        7 * 24, ge=0, description="How far back checkpoints (tagged snapshots) reach; 0: no time travel."
    )
    checkpoint_minutes: float = Field(
        15.0, gt=0, description="Beyond the dense window, one snapshot per this many minutes is kept."
    )
    coarse_after_hours: float = Field(
        24.0,
        ge=0,
        description="Checkpoints older than this are thinned to one per coarse_checkpoint_minutes.",
    )
    coarse_checkpoint_minutes: float = Field(60.0, gt=0)
    maintain_every_s: float | None = Field(
        60.0,
        ge=0,
        description="`k2 ingest` compacts, expires and cleans up this often (0: never; then run "
        "`k2 lake maintain --every` beside it).",
    )
    target_file_mb: int = Field(128, ge=1, description="Compaction's target data file size.")
    compact_fanout: int = Field(
        4, ge=2, description="Files of one size tier merged together: each byte is rewritten about "
        "log_fanout(target / commit file) times, and a hot partition keeps < fanout files per tier.",
    )  # fmt: skip
    compact_budget_mb: int = Field(
        512, ge=1, description="Most data one maintenance pass rewrites per table (bounds its pause)."
    )
    cold_minutes: float = Field(
        60.0, gt=0, description="A partition with no new file for this long is compacted fully."
    )
    metadata_versions_kept: int = Field(
        20, ge=1, description="Old metadata.json files kept (write.metadata.previous-versions-max)."
    )
    orphan_grace_minutes: float = Field(
        60.0, gt=0, description="Unreferenced files younger than this are left (a writer may be in flight)."
    )


class PipelineSettings(_Section):
    """The consumer pipeline."""

    group_id: str = Field("k2-ingest", min_length=1)
    instance_id: str | None = Field(
        None,
        description="Static group membership (group.instance.id): a restarted consumer takes its "
        "partitions back at once instead of waiting for the session timeout.",
    )
    session_timeout_ms: int = Field(10_000, ge=6_000, le=300_000)
    batch_max_messages: int = Field(50_000, ge=1)
    poll_timeout_s: float = Field(0.2, gt=0)
    gc_gen0_threshold: int = Field(
        50_000,
        ge=0,
        description="Allocations between Python's gen-0 collections while ingesting (0: Python's "
        "default of 700, which halves the consume rate; see k2/pipeline/gcpolicy.py).",
    )
    max_clock_skew_s: float = Field(
        300.0, gt=0, description="Exchange timestamps may lead ingest time by at most this much."
    )


class StateSettings(_Section):
    """Sequence tracking and deduplication."""

    backend: Literal["embedded", "redis"] = "embedded"
    reorder_window: int = Field(
        64,
        ge=0,
        description="How far behind the newest sequence a hole may be filled 'out of order' "
        "before it is recorded as a gap.",
    )
    reorder_timeout: float = Field(
        2.0,
        gt=0,
        description="Seconds (of the partition's exchange clock) after which a hole is recorded as a gap "
        "even if its own symbol has not traded since; must exceed the feed's reorder delay.",
    )
    sessions_kept: int = Field(
        10,
        ge=1,
        description="Closed sessions remembered per symbol (about 16 bytes each): a re-sent session "
        "among them is recognised tick by tick as duplicates, however old.",
    )
    dedup: bool = Field(True, description="Second net by message id, for feeds whose sequences lie.")
    redis_commit: Literal["watch", "lua"] = Field(
        "watch", description="WATCH/MULTI/EXEC (fastest on loopback) or one Lua call (fewer round trips)."
    )
    dedup_window_hours: float = Field(24.0, gt=0)
    dedup_generations: int = Field(4, ge=2, le=48, description="Bloom generations covering the window.")
    bloom_capacity: int = Field(10_000_000, ge=1000, description="Expected keys per window.")
    bloom_error_rate: float = Field(0.001, gt=0, lt=0.5)


class ApiSettings(_Section):
    """The FastAPI service."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    api_keys: list[SecretStr] = Field(
        default_factory=list, description="Accepted keys; required when bound beyond localhost."
    )
    rate_limit_per_minute: int = Field(600, ge=1, description="Requests per minute per key or client.")
    ops_rate_limit_per_minute: int = Field(
        600, ge=1, description="Requests per minute per client to /health and /metrics (a budget of its own)."
    )
    rate_limit_backend: Literal["memory", "redis"] = Field(
        "memory",
        description="memory: per process; redis: one budget shared by every worker and replica "
        "(through redis.url, or K2's local Redis).",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses of reverse proxies whose X-Forwarded-For is believed (uvicorn's "
        "forwarded_allow_ips). Empty: the socket peer is the client, whatever the headers say.",
    )
    max_rows: int = Field(100_000, ge=1)
    max_range_days: int = Field(31, ge=1)
    query_timeout_s: float = Field(10.0, gt=0)
    max_concurrent_queries: int = Field(
        8, ge=1, description="DuckDB queries at once; more get 503 with Retry-After, not a queue."
    )
    duckdb_memory_limit: str = Field(
        "2GB", pattern=r"^\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$", description="DuckDB's memory_limit."
    )
    max_streams_per_key: int = Field(
        4, ge=1, description="Open /v1/replay and /v1/stream responses per key (or client)."
    )
    max_streams: int = Field(64, ge=1, description="Open /v1/replay and /v1/stream responses in all.")
    stream_max_s: float = Field(3600.0, gt=0, description="A replay or live stream ends after this long.")
    stream_idle_s: float = Field(
        300.0, gt=0, description="A live stream with no event (keep-alives aside) for this long ends."
    )
    health_cache_s: float = Field(
        1.5, ge=0, le=60, description="/health answers from a result at most this old."
    )
    shutdown_grace_s: float = Field(
        5.0, ge=0, description="On SIGTERM, open responses get this long before they are cut."
    )
    max_connections: int = Field(
        1000, ge=1, description="Open connections (uvicorn limit_concurrency); more get 503."
    )


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "console", "json"] = Field(
        "auto", description="auto: readable on a terminal, JSON otherwise."
    )

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class Settings(BaseSettings):
    """Everything K2 can be told, with one-machine defaults."""

    model_config = SettingsConfigDict(
        env_prefix="K2_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
        toml_file=None,
    )

    data_dir: Path = Field(Path(".k2"), description="Where K2 keeps services, catalog and warehouse.")
    cache_dir: Path = Field(
        Path("~/.cache/k2"), description="Downloaded Kafka jars, shared between data directories."
    )
    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    lake: LakeSettings = LakeSettings()
    pipeline: PipelineSettings = PipelineSettings()
    state: StateSettings = StateSettings()
    api: ApiSettings = ApiSettings()
    log: LogSettings = LogSettings()
    resilience: ResilienceSettings = ResilienceSettings()
    hybrid: HybridSettings = HybridSettings()

    @field_validator("data_dir", "cache_dir", mode="after")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @model_validator(mode="before")
    @classmethod
    def _redis_password_file(cls, data: Any) -> Any:
        """Name the local Redis password file under data_dir (no I/O: the launcher writes it)."""
        if not isinstance(data, dict):
            return data
        redis = data.get("redis")
        if isinstance(redis, RedisSettings):
            redis = redis.model_dump()
        redis = dict(redis) if isinstance(redis, dict) else {}
        if redis.get("password_file") is None:
            data_dir = Path(str(data.get("data_dir") or ".k2")).expanduser().resolve()
            redis["password_file"] = data_dir / "services" / "redis" / "password"
            data = {**data, "redis": redis}
        return data

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = _TOML_FILE.get("path")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    @property
    def warehouse(self) -> str:
        return self.lake.warehouse or f"file://{self.data_dir / 'warehouse'}"

    @property
    def catalog_uri(self) -> str:
        if self.lake.catalog_uri is not None:
            return self.lake.catalog_uri.get_secret_value()
        return f"sqlite:///{self.data_dir / 'catalog.db'}"

    def masked(self) -> dict[str, Any]:
        """The effective configuration as plain data, secrets replaced by '**********'.

        Beyond the ``SecretStr`` fields: librdkafka options whose name says secret (SASL and SSL
        passwords, JAAS config, OAuth secrets) and the user:password part of any URL.
        """
        data = self.model_dump(mode="json")
        client = data["kafka"]["client"]
        data["kafka"]["client"] = {k: _MASK if _SECRET_NAME.search(k) else v for k, v in client.items()}
        if data["kafka"]["schema_registry_url"]:
            data["kafka"]["schema_registry_url"] = _mask_url(data["kafka"]["schema_registry_url"])
        data["effective"] = {
            "kafka_bootstrap": self.kafka.bootstrap,
            "redis_url": _mask_url(self.redis.effective_url),
            "catalog_uri": _mask_url(self.catalog_uri),
            "warehouse": self.warehouse,
        }
        return data


# pydantic-settings picks the TOML source in a classmethod; the path is handed over here, for the
# duration of one load_settings call only.
_TOML_FILE: dict[str, Path | None] = {}


_MASK = "**********"
#: Option names whose values are credentials (librdkafka's sasl.password, ssl.key.password,
#: sasl.jaas.config, sasl.oauthbearer.client.secret…; K2's own url, api_keys…).
_SECRET_NAME = re.compile(
    r"password|secret|jaas|token|credential|api_keys|private|\.pem$|^url$|_uri$|_url$", re.I
)


def _mask_url(url: str) -> str:
    """Hide the password part of a URL (scheme://user:secret@host -> scheme://user:****@host)."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:****@{host}"


def _describe(error: dict[str, Any]) -> str:
    """One line naming the setting (as its environment variable) and the accepted form."""
    loc = [str(part) for part in error.get("loc", ()) if not isinstance(part, int)]
    name = "K2_" + "__".join(part.upper() for part in loc) if loc else "K2_*"
    dotted = ".".join(loc) or "(root)"
    got = error.get("input")
    secret = any(_SECRET_NAME.search(part) for part in loc) or (loc[:2] == ["kafka", "client"])
    if secret:  # a rejected password is still a password: never echo it
        shown = " (value hidden: it may be a secret)" if got is not None else ""
    else:
        shown = f" (got {str(got)[:80]!r})" if got is not None and not isinstance(got, dict) else ""
    return f"{dotted} [{name}]: {error.get('msg', 'invalid value')}{shown}"


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the Settings once, from overrides, environment, TOML file and defaults.

    Args:
        config_file: a TOML file; when None, ``k2.toml`` in the working directory is used if present.
        overrides: values that beat every other source (used by tests and the CLI).

    Raises:
        ConfigError: a value is invalid; the message names each setting and what it accepts.
    """
    path = config_file
    if path is None and DEFAULT_CONFIG_FILE.is_file():
        path = DEFAULT_CONFIG_FILE
    if path is not None and not path.is_file():
        raise ConfigError(f"configuration file not found: {path}")
    _TOML_FILE["path"] = path
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = [_describe(err) for err in exc.errors()]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from exc
    except ValueError as exc:  # a TOML syntax error or an undecodable environment value
        raise ConfigError(f"invalid configuration: {exc}") from exc
    finally:
        _TOML_FILE.pop("path", None)
