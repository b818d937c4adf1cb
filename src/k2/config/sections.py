"""The per-stage sections of K2's settings: Kafka, Redis, the lake, the pipeline, state, API, logs.

Each section is a frozen pydantic model nested into ``k2.config.Settings``; a component takes its
own section and never the whole object.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

__all__ = [
    "ApiSettings",
    "KafkaSettings",
    "LakeSettings",
    "LogSettings",
    "PipelineSettings",
    "PostgresSettings",
    "ProxySettings",
    "RedisSettings",
    "S3Settings",
    "StateSettings",
]


def _read_secret(path: Path | None) -> str | None:
    """A secret K2 generated into a file on a service's first start; None before (or unreadable)."""
    if path is None:
        return None
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Section):
    """Kafka: a local broker that K2 launches, or an external cluster."""

    bootstrap_servers: str | None = Field(
        None, description="External cluster 'host:port[,host:port]'. Unset: K2 runs a local broker."
    )
    port: int = Field(
        19092, ge=1, le=65535, description="Client port of the local broker (node i of a cluster: port + 2i)."
    )
    controller_port: int = Field(
        19093,
        ge=1,
        le=65535,
        description="KRaft controller port (node i of a cluster: controller_port + 2i).",
    )
    brokers: int = Field(
        1,
        ge=1,
        le=5,
        description="Nodes of the local KRaft cluster (each a broker and a controller voter). With 3, "
        "topics get 3 replicas and min.insync.replicas 2, so one node may die without losing a write.",
    )
    version: str = Field("4.1.1", pattern=r"^4\.\d+\.\d+$", description="Apache Kafka 4.x version.")
    heap: str = Field("768m", pattern=r"^\d+[mg]$", description="Broker JVM heap, e.g. 768m or 1g.")
    topic_prefix: str = Field("k2.", pattern=r"^[A-Za-z0-9._-]*$")
    partitions: int = Field(4, ge=1, le=1024)
    replication_factor: int | None = Field(
        None, ge=1, le=16, description="Replicas of every topic K2 creates. Unset: min(3, brokers)."
    )
    min_insync_replicas: int | None = Field(
        None,
        ge=1,
        le=16,
        description="min.insync.replicas of every topic K2 creates (writes use acks=all). "
        "Unset: replicas - 1 (at least 1, at most 2).",
    )
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

    @model_validator(mode="after")
    def _ports_apart(self) -> KafkaSettings:
        clients, controllers = set(self.node_ports), set(self.node_controller_ports)
        if clients & controllers or max(clients | controllers) > 65535:
            raise ValueError(
                f"{self.brokers} node(s) need client ports port+2i and controller ports controller_port+2i "
                f"that do not overlap and stay below 65536 (port={self.port}, controller_port="
                f"{self.controller_port})"
            )
        return self

    @property
    def node_ports(self) -> list[int]:
        return [self.port + 2 * i for i in range(self.brokers)]

    @property
    def node_controller_ports(self) -> list[int]:
        return [self.controller_port + 2 * i for i in range(self.brokers)]

    @property
    def replicas(self) -> int:
        return self.replication_factor or min(3, self.brokers)

    @property
    def min_insync(self) -> int:
        return self.min_insync_replicas or max(1, min(2, self.replicas - 1))

    @property
    def bootstrap(self) -> str:
        return self.bootstrap_servers or ",".join(f"127.0.0.1:{p}" for p in self.node_ports)

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
        return _read_secret(self.password_file)


class PostgresSettings(_Section):
    """A local PostgreSQL server for the Iceberg catalog, launched by `k2 services up postgres`.

    It listens on loopback only and requires the password K2 generates on its first start and keeps
    in ``password_file`` (mode 0600), like the local Redis. An external server is named by
    ``lake.catalog_uri`` instead, and then K2 starts nothing.
    """

    port: int = Field(15432, ge=1, le=65535, description="Port of the local PostgreSQL server.")
    user: str = Field("k2", pattern=r"^[a-z_][a-z0-9_]*$", description="Its superuser, owner of the catalog.")
    database: str = Field(
        "k2", pattern=r"^[a-z_][a-z0-9_]*$", description="The database holding the catalog."
    )
    bin_dir: Path | None = Field(
        None,
        description="Directory of initdb and postgres. Unset: the newest /usr/lib/postgresql/*/bin "
        "(Debian's postgresql package), else PATH.",
    )
    os_user: str = Field(
        "postgres",
        description="When K2 runs as root, the unprivileged system user that owns and runs the server "
        "(PostgreSQL refuses to run as root). Ignored otherwise: the server runs as K2's own user.",
    )
    password_file: Path | None = Field(
        None,
        description="The local server's password, generated on its first start (mode 0600). "
        "Unset: <data_dir>/services/postgres/password.",
    )

    def local_password(self) -> str | None:
        """The local server's password, once K2 has started it (None before)."""
        return _read_secret(self.password_file)

    @property
    def effective_url(self) -> str:
        """The SQLAlchemy URI of the local server's catalog database."""
        password = self.local_password()
        auth = f"{self.user}:{quote(password, safe='')}" if password else self.user
        return f"postgresql+psycopg2://{auth}@127.0.0.1:{self.port}/{self.database}"


class S3Settings(_Section):
    """Object storage for a warehouse at ``s3://bucket/...``: a local SeaweedFS K2 runs, or any S3.

    Only read when ``lake.warehouse`` starts with ``s3://``. The local server is SeaweedFS, built
    once from its Go module (``k2.services.weed``), listening on loopback.
    """

    endpoint: str | None = Field(
        None,
        description="External S3 endpoint, e.g. https://s3.ap-southeast-2.amazonaws.com or a MinIO's "
        "URL. Unset: K2 runs a local SeaweedFS on 127.0.0.1:port.",
    )
    port: int = Field(
        18333,
        ge=1,
        le=65528,
        description="S3 port of the local SeaweedFS; its master, volume and filer use port+1..port+7.",
    )
    region: str = Field("us-east-1", min_length=1, description="Region the requests are signed for.")
    access_key_id: str = Field("k2", min_length=1, description="S3 access key id.")
    secret_access_key: SecretStr | None = Field(
        None,
        description="S3 secret key. Unset with the local server: generated on its first start "
        "(mode 0600, secret_file); required with an external endpoint.",
    )
    secret_file: Path | None = Field(
        None, description="The local server's secret key. Unset: <data_dir>/services/s3/secret."
    )
    version: str = Field(
        "v0.0.0-20261109003541-7506e5f91cd6",
        pattern=r"^v\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$",
        description="Go module version of github.com/seaweedfs/seaweedfs built for the local server.",
    )

    @property
    def managed(self) -> bool:
        return self.endpoint is None

    @property
    def effective_endpoint(self) -> str:
        return self.endpoint or f"http://127.0.0.1:{self.port}"

    @property
    def ports(self) -> list[int]:
        """The local server's ports: S3 first, then master, volume and filer (HTTP, gRPC), S3 gRPC."""
        return [self.port + i for i in range(8)]

    def secret(self) -> str | None:
        """The secret key: configured, or the local server's once K2 has generated it (None before)."""
        if self.secret_access_key is not None:
            return self.secret_access_key.get_secret_value()
        return _read_secret(self.secret_file) if self.managed else None


class LakeSettings(_Section):
    """Iceberg catalog and warehouse."""

    catalog: Literal["sqlite", "postgres"] = Field(
        "sqlite",
        description="sqlite: <data_dir>/catalog.db; postgres: the local PostgreSQL that "
        "`k2 services up postgres` runs (section postgres). catalog_uri, when set, beats both.",
    )
    catalog_uri: SecretStr | None = Field(
        None,
        description="SQLAlchemy URI of an external SQL catalog (sqlite:/// or postgresql+psycopg2://); "
        "a secret: its password is masked wherever configuration is shown.",
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
        7 * 24,
        ge=0,
        description="How far back checkpoints (tagged snapshots, snapshot_id travel) reach; 0: none. "
        "as_of stays exact beyond them (rows carry their commit's time).",
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
    row_group_rows: int = Field(
        16_384,
        ge=1024,
        description="Rows per Parquet row group of K2's tables. Files are sorted by symbol, so small "
        "groups let a one-symbol query skip the rest (a miss 40 % faster) for ~17 % more bytes per "
        "trade than pyiceberg's 1,048,576; upkeep applies a change to later files.",
    )
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
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Serve this process's Prometheus metrics (gaps recorded, pending holes, commits, "
        "levels: what deploy/k2-alerts.yml reads) on http://metrics_host:PORT/metrics. Unset: none.",
    )
    metrics_host: str = Field("127.0.0.1", description="Address the ingester's metrics listen on.")
    consumer: Literal["auto", "native", "python"] = Field(
        "auto",
        description="What reads Kafka: 'native' (K2's Rust extension over librdkafka, which `make` "
        "builds: a batch as columns, no Python object per message), 'python' (confluent-kafka), or "
        "'auto' (native when built, else python).",
    )
    batch_max_messages: int = Field(50_000, ge=1)
    poll_timeout_s: float = Field(0.2, gt=0)
    gc_gen0_threshold: int = Field(
        50_000,
        ge=0,
        description="Allocations between Python's gen-0 collections while ingesting (0: Python's "
        "default of 700, which halves the consume rate; see k2/pipeline/gcpolicy.py).",
    )
    max_clock_skew_s: float = Field(
        300.0,
        gt=0,
        description="Exchange timestamps may lead their Kafka message's timestamp by at most this much.",
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
    idle_days: int = Field(
        30,
        ge=1,
        description="Redis: a symbol's state is deleted once its newest session is this many days "
        "older than the newest session of its kind and exchange (state.sweep_every_s).",
    )
    sweep_every_s: float = Field(
        3600.0, ge=0, description="Redis: seconds between sweeps of idle symbols' state; 0: never."
    )
    redis_commit: Literal["watch", "lua"] = Field(
        "watch", description="WATCH/MULTI/EXEC (fastest on loopback) or one Lua call (fewer round trips)."
    )
    dedup_window_hours: float = Field(24.0, gt=0)
    dedup_generations: int = Field(4, ge=2, le=48, description="Bloom generations covering the window.")
    bloom_capacity: int = Field(10_000_000, ge=1000, description="Expected keys per window.")
    bloom_error_rate: float = Field(0.001, gt=0, lt=0.5)
    fold_rows: int = Field(
        16,
        ge=2,
        description="Embedded: sequence-state commits kept as log rows before a background fold moves "
        "the oldest half into per-key rows (docs/state.md). More: fewer keys written, a longer replay "
        "on restart.",
    )


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
    shared_hybrid: Literal["auto", "redis", "off"] = Field(
        "auto",
        description="Where the live-tail reader's settings (hybrid.*) come from. redis: one set for "
        "every replica, kept in Redis under redis.key_prefix (the first replica's, or the last "
        "`k2 config hybrid publish`); off: this process's own; auto: redis when rate_limit_backend "
        "is redis (replicas), else off.",
    )
    shared_hybrid_check_s: float = Field(
        5.0, gt=0, description="How often a replica compares its hybrid settings with the group's in Redis."
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
    warmup: bool = Field(
        True,
        description="At start, load the tables' file lists and their newest rows before /ready says "
        "ready; then watch for commits and load each new snapshot before queries switch to it.",
    )
    warm_rows: int = Field(
        1_000_000, ge=0, description="Rows of the newest data files warm-up decodes into memory (all tables)."
    )
    row_cache_rows: int = Field(  # the defaults are k2.query.rows.DEFAULT_ROWS and DEFAULT_BYTES
        8_000_000,
        ge=0,
        description="Decoded rows the query engine keeps in memory (the hot-row cache; 0 turns it off). "
        "Queries served from it take a millisecond; a miss reads Parquet.",
    )
    row_cache_mb: int = Field(
        1024, ge=1, description="Memory bound of the hot-row cache, whichever of the two comes first."
    )
    shutdown_grace_s: float = Field(
        5.0, ge=0, description="On SIGTERM, open responses get this long before they are cut."
    )
    max_connections: int = Field(
        1000, ge=1, description="Open connections (uvicorn limit_concurrency); more get 503."
    )

    @property
    def shares_hybrid(self) -> bool:
        """Whether the hybrid settings are the replica group's, in Redis (``shared_hybrid``)."""
        return self.shared_hybrid == "redis" or (
            self.shared_hybrid == "auto" and self.rate_limit_backend == "redis"
        )


#: One upstream of the proxy: host:port, the host a name or IPv4 address, or [IPv6]:port. Nothing
#: else reaches nginx's configuration file (no spaces, semicolons or braces to inject directives with).
_UPSTREAM = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]):(\d{1,5})$")


class ProxySettings(_Section):
    """The local reverse proxy (Debian's nginx) in front of several ``k2 serve`` replicas.

    ``k2 services up proxy`` starts it, by name only: one machine with one API needs none.
    """

    port: int = Field(18080, ge=1, le=65535, description="The proxy listens on 127.0.0.1:port.")
    upstreams: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="The `k2 serve` replicas, host:port each; in the environment a comma-separated "
        "list (K2_PROXY__UPSTREAMS=127.0.0.1:8001,127.0.0.1:8002).",
    )
    fail_timeout_s: int = Field(
        10, ge=1, le=3600, description="A replica that refused a connection is left out this long."
    )
    connect_timeout_s: int = Field(2, ge=1, le=60, description="Connecting to a replica; then the next one.")
    read_timeout_s: int = Field(
        3660,
        ge=1,
        description="Between two reads from a replica; above api.stream_max_s, or the proxy cuts streams.",
    )
    nginx: Path | None = Field(
        None, description="The nginx program. Unset: nginx on PATH, else /usr/sbin/nginx."
    )

    @field_validator("upstreams", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str) and value.lstrip().startswith("["):
            return json.loads(value)  # the JSON form other list settings take
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("upstreams", mode="after")
    @classmethod
    def _valid_upstreams(cls, value: list[str]) -> list[str]:
        for upstream in value:
            match = _UPSTREAM.match(upstream)
            if match is None or not 1 <= int(match.group(1)) <= 65535:
                raise ValueError(f"{upstream!r} is not host:port (a name or address, then a port 1-65535)")
        if len(set(value)) != len(value):
            raise ValueError("an upstream is listed twice")
        return value


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "console", "json"] = Field(
        "auto", description="auto: readable on a terminal, JSON otherwise."
    )
    gap_lines: Literal["auto", "each", "summary"] = Field(
        "auto",
        description="Gap events in the log: one line each, or a per-symbol summary every 10 s. auto: "
        "the summary in readable (console) logs, each line in JSON logs; `k2 -v` forces each.",
    )

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value
