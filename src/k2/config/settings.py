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
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

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
from k2.errors import ConfigError

__all__ = ["DEFAULT_CONFIG_FILE", "Settings", "derive", "load_settings"]

DEFAULT_CONFIG_FILE = Path("k2.toml")


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
    postgres: PostgresSettings = PostgresSettings()
    lake: LakeSettings = LakeSettings()
    s3: S3Settings = S3Settings()
    pipeline: PipelineSettings = PipelineSettings()
    state: StateSettings = StateSettings()
    api: ApiSettings = ApiSettings()
    log: LogSettings = LogSettings()
    resilience: ResilienceSettings = ResilienceSettings()
    hybrid: HybridSettings = HybridSettings()
    proxy: ProxySettings = ProxySettings()

    @field_validator("data_dir", "cache_dir", mode="after")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @model_validator(mode="before")
    @classmethod
    def _password_files(cls, data: Any) -> Any:
        """Name the local Redis and PostgreSQL password files and the S3 secret file under data_dir
        (no I/O: the launcher writes them)."""
        if not isinstance(data, dict):
            return data
        for name, model, field, file in (
            ("redis", RedisSettings, "password_file", "password"),
            ("postgres", PostgresSettings, "password_file", "password"),
            ("s3", S3Settings, "secret_file", "secret"),
        ):
            section = data.get(name)
            if isinstance(section, model):
                section = section.model_dump()
            section = dict(section) if isinstance(section, dict) else {}
            if section.get(field) is None:
                data_dir = Path(str(data.get("data_dir") or ".k2")).expanduser().resolve()
                section[field] = data_dir / "services" / name / file
                data = {**data, name: section}
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
        """The SQLAlchemy URI of the Iceberg catalog: lake.catalog_uri, else per lake.catalog."""
        if self.lake.catalog_uri is not None:
            return self.lake.catalog_uri.get_secret_value()
        if self.lake.catalog == "postgres":
            return self.postgres.effective_url
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
            "s3_endpoint": self.s3.effective_endpoint if self.warehouse.startswith("s3://") else None,
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


def _describe(error: ErrorDetails) -> str:
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


def derive(settings: Settings, **sections: dict[str, Any]) -> Settings:
    """A copy of ``settings`` with some fields of some sections replaced, validated like a load.

    ``derive(s, lake={"namespace": "scratch"})`` keeps every other value, wherever it came from
    (``--config``, environment, defaults): the one way a command narrows the configuration it was
    given without reading it again.

    Raises:
        ConfigError: a replaced value is invalid.
    """
    data = settings.model_dump()
    for name, fields in sections.items():
        data[name] = {**data[name], **fields}
    return load_settings(**data)
