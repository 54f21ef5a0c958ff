"""Settings: every environment variable the service reads, validated once at start.

This is the only module that reads the environment. Tests build ``Settings(...)`` directly.
"""

from __future__ import annotations

import logging
import re
from enum import StrEnum
from typing import Annotated, Literal

from limits import parse_many
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)

MiB = 1024 * 1024
_ORIGIN = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#\s]+/?$|^null$")


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names the environment variable."""


class Environment(StrEnum):
    DEVELOPMENT = "development"
    STAGING = "staging"
    PRODUCTION = "production"


LogLevel = Annotated[str, Field(pattern=r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL)$")]
LogFormat = Literal["text", "json"]


class Settings(BaseSettings):
    """The service configuration. Field ``foo_bar`` is read from the variable ``FOO_BAR``; a
    variable set to the empty string counts as unset (its default applies)."""

    model_config = SettingsConfigDict(
        case_sensitive=False, extra="ignore", frozen=True, env_ignore_empty=True
    )

    # The spec's variables.
    environment: Environment = Environment.DEVELOPMENT
    log_level: LogLevel = "INFO"
    port: int = Field(default=3006, ge=0, le=65535)
    redis_url: str | None = None
    database_url: str = "sqlite+aiosqlite:///./data/collab.db"
    jwt_secret: str | None = None
    ai_agents_url: str | None = None
    ide_bridge_url: str | None = None
    max_connections: int = Field(default=10_000, ge=1)
    heartbeat_interval: float = Field(default=15.0, gt=0, le=3600)
    message_queue_size: int = Field(default=1_000, ge=1)

    # Ours.
    log_format: LogFormat | None = None  # unset: json when ENVIRONMENT=production, else text
    host: str = "0.0.0.0"
    max_message_size: int = Field(default=32 * MiB, ge=1024)
    max_event_message_size: int = Field(default=1 * MiB, ge=1024)
    max_json_body_size: int = Field(default=1 * MiB, ge=1024)
    persist_interval_ms: int = Field(default=100, ge=0, le=60_000)
    compact_after_updates: int = Field(default=500, ge=2)
    compact_after_bytes: int = Field(default=4 * MiB, ge=1024)
    room_unload_grace: float = Field(default=5.0, ge=0)
    store_retry_max: float = Field(default=10.0, gt=0)
    database_timeout: float = Field(default=10.0, gt=0, le=600)
    database_startup_timeout: float = Field(default=30.0, ge=0, le=3600)
    auto_create_workspaces: bool = False
    event_retention: int = Field(default=100_000, ge=10)
    agent_task_max_length: int = Field(default=65_536, ge=1, le=1_000_000)
    agent_step_max_length: int = Field(default=16_384, ge=1, le=1_000_000)
    agent_result_max_length: int = Field(default=65_536, ge=1, le=1_000_000)
    agent_presence_linger: float = Field(default=5.0, ge=0)
    document_view_timeout: float = Field(default=10.0, gt=0, le=600)
    # Several instances (with REDIS_URL).
    redis_prefix: str = Field(default="collab", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    instance_timeout: float = Field(default=10.0, ge=1, le=600)
    stream_retention: float = Field(default=60.0, ge=2, le=86_400)
    sync_check_interval: float = Field(default=30.0, ge=0.5, le=3600)

    # Protection (README "Protection"). A rate is "N/second", "N/minute", ... (several separated by
    # ";"); an empty rate, or 0 for a count, turns that limit off.
    cors_origins: str | None = Field(
        default=None,
        description="Comma-separated origins (scheme://host[:port]) allowed to call the REST API from a "
        "browser and to open WebSockets; '*' allows any. Unset: any origin in development and staging; "
        "production refuses to start.",
    )
    rate_limit_rest_user: str = Field(
        default="50/second", description="REST requests per user (token subject), across instances."
    )
    rate_limit_rest_ip: str = Field(
        default="200/second", description="REST requests per client IP address, across instances."
    )
    rate_limit_connect_ip: str = Field(
        default="1000/minute", description="WebSocket connection attempts per client IP, across instances."
    )
    max_connections_per_user: int = Field(
        default=100, ge=0, description="Open WebSocket connections per user on one instance (0: no limit)."
    )
    max_connections_per_ip: int = Field(
        default=1000,
        ge=0,
        description="Open WebSocket connections per client IP on one instance (0: no limit).",
    )
    rate_limit_sync_messages: int = Field(
        default=200, ge=0, description="Messages per second one document connection may send (0: no limit)."
    )
    rate_limit_sync_bytes: int = Field(
        default=8 * MiB, ge=0, description="Bytes per second one document connection may send (0: no limit)."
    )
    rate_limit_sync_time_ms: int = Field(
        default=200,
        ge=0,
        le=1000,
        description="Milliseconds of the server's time per second that handling one document connection's "
        "messages may take: applying its updates, answering its sync step 1 (0: no limit).",
    )
    rate_limit_event_messages: int = Field(
        default=200,
        ge=0,
        description="Messages per second one event-channel connection may send (0: no limit).",
    )
    rate_limit_event_bytes: int = Field(
        default=1 * MiB,
        ge=0,
        description="Bytes per second one event-channel connection may send (0: no limit).",
    )
    rate_limit_close_after: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="Seconds a WebSocket may stay over its message, byte or time rate before it is closed "
        "with 4429.",
    )
    message_queue_bytes: int = Field(
        default=16 * MiB,
        ge=64 * 1024,
        description="Bytes queued for one connection before it is cut off with 1013 (one frame larger "
        "than this is still sent to an otherwise empty queue).",
    )
    handshake_timeout: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description="Seconds a new TCP connection has to send its complete request line and headers.",
    )
    max_request_head_size: int = Field(
        default=16 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="Largest request line plus headers, in bytes (431; a request line over 8 KiB is 414).",
    )
    shutdown_timeout: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Seconds a SIGTERM drain may take: refuse new connections, close WebSockets with 1012, "
        "store every pending update.",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower_log_format(cls, value: object) -> object:
        return (value.lower() or None) if isinstance(value, str) else value

    @field_validator(
        "redis_url", "jwt_secret", "ai_agents_url", "ide_bridge_url", "cors_origins", mode="before"
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        from crdt_store import normalise_database_url  # here: the token command loads no store

        return normalise_database_url(value)

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @model_validator(mode="after")
    def _production_needs_secret(self) -> Settings:
        if self.environment is Environment.PRODUCTION and not self.jwt_secret:
            raise ValueError("JWT_SECRET must be set when ENVIRONMENT=production")
        return self

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: str | None) -> str | None:
        if value is not None:
            for origin in value.split(","):
                origin = origin.strip()
                if origin and origin != "*" and not _ORIGIN.fullmatch(origin):
                    raise ValueError(f"{origin!r} is not an origin (scheme://host[:port], no path)")
        return value

    @field_validator("rate_limit_rest_user", "rate_limit_rest_ip", "rate_limit_connect_ip")
    @classmethod
    def _rate(cls, value: str) -> str:
        value = value.strip()
        if value and value != "0":
            try:
                parse_many(value)
            except ValueError:
                raise ValueError(
                    f"{value!r} is not a rate such as '50/second' or '10/second;300/minute'"
                ) from None
        return value

    @model_validator(mode="after")
    def _production_needs_origins(self) -> Settings:
        if self.environment is Environment.PRODUCTION and self.cors_origins is None:
            raise ValueError(
                "CORS_ORIGINS must be set when ENVIRONMENT=production (the browser origins allowed, "
                "comma-separated, or '*')"
            )
        return self

    @model_validator(mode="after")
    def _streams_outlive_instances(self) -> Settings:
        # A dead instance's unstored updates are read back from the streams by a survivor.
        if self.stream_retention < 2 * self.instance_timeout:
            raise ValueError("STREAM_RETENTION must be at least twice INSTANCE_TIMEOUT")
        return self

    @property
    def allowed_origins(self) -> frozenset[str] | None:
        """The origins browsers may call from (lower case, no trailing slash); None: any."""
        if self.cors_origins is None:
            return None
        origins = {o.strip().rstrip("/").lower() for o in self.cors_origins.split(",") if o.strip()}
        return None if "*" in origins else frozenset(origins)

    @property
    def auth_enabled(self) -> bool:
        return self.jwt_secret is not None

    @property
    def json_logs(self) -> bool:
        """Whether log lines are JSON objects: ``LOG_FORMAT``, by default in production only."""
        if self.log_format is None:
            return self.environment is Environment.PRODUCTION
        return self.log_format == "json"


class SigningSettings(BaseSettings):
    """What ``python -m server token`` reads: ``JWT_SECRET`` alone (the other settings are not
    loaded, so minting a token loads nothing of the server)."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    jwt_secret: str | None = None

    @field_validator("jwt_secret", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment (and overrides), turning validation errors into one
    ``ConfigError`` whose message names each offending variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]).upper() or "configuration"
            problems.append(f"{name}: {error['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
