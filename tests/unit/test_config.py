"""Settings: the spec's variables, defaults, and errors that name the variable."""

from __future__ import annotations

import subprocess
import sys

import pytest

from server.config import ConfigError, Environment, load_settings
from tests.support.server import ROOT


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "ENVIRONMENT",
        "PORT",
        "DATABASE_URL",
        "JWT_SECRET",
        "REDIS_URL",
        "HEARTBEAT_INTERVAL",
        "MAX_CONNECTIONS",
        "MESSAGE_QUEUE_SIZE",
        "LOG_LEVEL",
    ):
        monkeypatch.delenv(name, raising=False)


def test_defaults_are_the_spec_and_embedded_ones() -> None:
    settings = load_settings()
    assert settings.port == 3006
    assert settings.environment is Environment.DEVELOPMENT
    assert settings.database_url == "sqlite+aiosqlite:///./data/collab.db"
    assert settings.redis_url is None and settings.jwt_secret is None


def test_every_spec_variable_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        "ENVIRONMENT": "staging",
        "LOG_LEVEL": "debug",
        "PORT": "4000",
        "REDIS_URL": "redis://r:6379/1",
        "DATABASE_URL": "postgresql://u@db/app",
        "JWT_SECRET": "s3cret",
        "AI_AGENTS_URL": "http://agents",
        "IDE_BRIDGE_URL": "http://ide",
        "MAX_CONNECTIONS": "7",
        "HEARTBEAT_INTERVAL": "2.5",
        "MESSAGE_QUEUE_SIZE": "33",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    s = load_settings()
    assert (s.environment, s.log_level, s.port, s.redis_url) == (
        Environment.STAGING,
        "DEBUG",
        4000,
        "redis://r:6379/1",
    )
    assert s.database_url == "postgresql+asyncpg://u@db/app"
    assert (s.jwt_secret, s.ai_agents_url, s.ide_bridge_url) == ("s3cret", "http://agents", "http://ide")
    assert (s.max_connections, s.heartbeat_interval, s.message_queue_size) == (7, 2.5, 33)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "eighty"),
        ("PORT", "70000"),
        ("MAX_CONNECTIONS", "0"),
        ("HEARTBEAT_INTERVAL", "-1"),
        ("DATABASE_URL", "mysql://x"),
        ("REDIS_URL", "http://x"),
        ("LOG_LEVEL", "LOUD"),
        ("ENVIRONMENT", "prod"),
        ("PERSIST_INTERVAL_MS", "-1"),
        ("DATABASE_TIMEOUT", "0"),
        ("DATABASE_STARTUP_TIMEOUT", "-5"),
    ],
)
def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        load_settings()


def test_production_requires_a_jwt_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVIRONMENT", "production")
    with pytest.raises(ConfigError, match="JWT_SECRET"):
        load_settings()
    monkeypatch.setenv("JWT_SECRET", "x" * 32)
    monkeypatch.setenv("CORS_ORIGINS", "https://app.example")
    assert load_settings().environment is Environment.PRODUCTION


def test_server_refuses_to_start_on_bad_configuration() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "server"],
        cwd=ROOT,
        env={"PORT": "not-a-port", "PATH": ""},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "PORT" in result.stderr


def test_streams_must_outlive_the_instance_timeout() -> None:
    with pytest.raises(ConfigError, match="STREAM_RETENTION"):
        load_settings(instance_timeout=30, stream_retention=40)
    assert load_settings(instance_timeout=5, stream_retention=10).stream_retention == 10
