"""``python -m server``: run the service with settings from the environment."""

from __future__ import annotations

import logging
import sys
from typing import Any

import uvicorn
from fastapi import FastAPI

from .app import create_app
from .config import ConfigError, Settings, load_settings


def uvicorn_config(app: FastAPI, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration the service runs with (tests use it too, with port 0)."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level.lower(),
        "ws": "websockets-sansio",
        # The frame limit sits above MAX_MESSAGE_SIZE so that the service, not the protocol
        # layer, decides, and answers with close code 1009 and a reason.
        "ws_max_size": settings.max_message_size + 1024,
        "ws_per_message_deflate": False,
        "ws_ping_interval": settings.heartbeat_interval,
        "ws_ping_timeout": settings.heartbeat_interval,
        "timeout_graceful_shutdown": 10,
        "lifespan": "on",
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    logging.getLogger().setLevel(settings.log_level)
    uvicorn.Server(uvicorn_config(create_app(settings), settings)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
