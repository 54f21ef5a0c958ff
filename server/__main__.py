"""``python -m server``: run the service with settings from the environment."""

from __future__ import annotations

import argparse
import gc
import sys
from typing import Any

import uvicorn
from fastapi import FastAPI

from .app import create_app
from .auth import GlobalRole, mint_token
from .config import ConfigError, Settings, load_settings
from .logs import configure_logging, quiet_refusals
from .websocket import CollabWebSocketProtocol


def uvicorn_config(app: FastAPI, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration the service runs with (tests use it too, with port 0)."""
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level.lower(),
        "ws": CollabWebSocketProtocol,  # uvicorn's "websockets-sansio", with a direct frame path
        # The frame limit sits above MAX_MESSAGE_SIZE so that the service, not the protocol
        # layer, decides, and answers with close code 1009 and a reason.
        "ws_max_size": settings.max_message_size + 1024,
        "ws_per_message_deflate": False,
        "ws_ping_interval": settings.heartbeat_interval,
        "ws_ping_timeout": settings.heartbeat_interval,
        "timeout_graceful_shutdown": 10,
        "lifespan": "on",
        "log_config": None,  # uvicorn's lines go to the service's handler (``logs.configure_logging``)
    }
    options.update(overrides)
    config = uvicorn.Config(app, **options)
    quiet_refusals()
    return config


def tune_garbage_collector() -> None:
    """Collect less often, and never scan what exists once the service is built. The service keeps
    many long-lived objects per connection (protocol, queues, tasks): with Python's default
    thresholds, the collections triggered by each connection's allocations walk all of them again,
    which was about 40 % of the CPU a join costs (``benchmarks/README.md``)."""
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m server", description="Real-time collaboration service")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="run the server (the default)")
    token = commands.add_parser(
        "token", help="mint a token signed with JWT_SECRET (for development and scripts)"
    )
    token.add_argument("--user", required=True, help="user id (the 'sub' claim)")
    token.add_argument("--name", help="display name (defaults to the user id)")
    token.add_argument(
        "--role",
        choices=[r.value for r in GlobalRole if r is not GlobalRole.USER],
        help="service (agent publishers) or admin",
    )
    token.add_argument(
        "--ttl", type=float, default=24 * 3600, help="seconds until it expires (default: a day)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    configure_logging("INFO")
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "token":
        if not settings.jwt_secret:
            print("error: JWT_SECRET is not set: there is nothing to sign tokens with", file=sys.stderr)
            return 2
        print(
            mint_token(settings.jwt_secret, user_id=args.user, name=args.name, role=args.role, ttl=args.ttl)
        )
        return 0
    configure_logging(settings.log_level, secrets=[settings.jwt_secret or ""])
    server = uvicorn.Server(uvicorn_config(create_app(settings), settings))
    tune_garbage_collector()
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
