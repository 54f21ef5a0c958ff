"""The container files: the Dockerfile passes hadolint and has what the service needs; the compose
file runs the app with PostgreSQL 15 and Redis 7, healthy before the app starts, with every
setting wired and listed in .env.example. (``.ci/run`` also has Compose itself parse the file:
``make check-containers``.)"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from server.config import Settings
from tests.support.server import ROOT

COMPOSE = ROOT / "docker-compose.realtime-collaboration.yml"
SPEC_VARIABLES = {
    "ENVIRONMENT",
    "LOG_LEVEL",
    "PORT",
    "REDIS_URL",
    "DATABASE_URL",
    "JWT_SECRET",
    "AI_AGENTS_URL",
    "IDE_BRIDGE_URL",
    "MAX_CONNECTIONS",
    "HEARTBEAT_INTERVAL",
    "MESSAGE_QUEUE_SIZE",
}


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def test_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(hadolint), "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_the_service_unprivileged_with_a_health_check() -> None:
    text = (ROOT / "Dockerfile").read_text()
    instructions = [
        line.split(None, 1) for line in text.splitlines() if line and not line.startswith((" ", "#"))
    ]
    names = [name for name, *_ in instructions]
    assert re.search(r"^FROM python:3\.1[1-9]-slim", text, re.MULTILINE)
    # The dependency layer is built from pyproject.toml before the source is copied.
    assert names.index("COPY") < names.index("RUN") < max(i for i, n in enumerate(names) if n == "COPY")
    assert "COPY pyproject.toml" in text.split("COPY server")[0]
    assert re.search(r"^USER (?!root|0\b)\S+", text, re.MULTILINE)
    assert 'CMD ["python", "-m", "server", "healthcheck"]' in text
    assert 'ENTRYPOINT ["python", "-m", "server"]' in text


def test_compose_runs_the_app_after_healthy_postgresql_and_redis() -> None:
    services = compose()["services"]
    app, postgres, redis = services["realtime-collaboration"], services["postgres"], services["redis"]
    assert app["container_name"] == "realtime-collaboration"
    assert app["build"] == "."
    assert re.fullmatch(r"postgres:15(\.\d+)?(-\w+)?", postgres["image"])
    assert re.fullmatch(r"redis:7(\.\d+)*(-\w+)?", redis["image"])
    for service in (app, postgres, redis):
        assert service["healthcheck"]["test"]
    for dependency in ("postgres", "redis"):
        assert app["depends_on"][dependency] == {"condition": "service_healthy"}
    volumes = compose()["volumes"]
    assert any(v.split(":")[0] in volumes and "/var/lib/postgresql/data" in v for v in postgres["volumes"])
    assert any(v.split(":")[0] in volumes and v.endswith(":/data") for v in redis["volumes"])
    environment = app["environment"]
    assert (
        environment["DATABASE_URL"].startswith("postgresql://")
        and "@postgres:5432/" in environment["DATABASE_URL"]
    )
    assert environment["REDIS_URL"] == "redis://redis:6379/0"


def test_every_setting_is_wired_and_listed_in_env_example() -> None:
    wired = set(compose()["services"]["realtime-collaboration"]["environment"])
    settings = {name.upper() for name in Settings.model_fields} - {"HOST"}  # the image listens on all
    assert wired >= SPEC_VARIABLES
    assert settings <= wired, settings - wired
    example = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", example, re.MULTILINE))
    substituted = set(re.findall(r"\$\{([A-Z][A-Z0-9_]+)", COMPOSE.read_text()))
    assert substituted <= listed, substituted - listed
    assert (settings - {"DATABASE_URL", "REDIS_URL"}) <= listed


def test_license_is_mit() -> None:
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
