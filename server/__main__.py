"""``python -m server``: run the service, mint a token, or check a running one's health.

Every setting of ``config.Settings`` is also a flag (``PORT`` is ``--port``, ``DATABASE_URL``
``--database-url``, a boolean ``--auto-create-workspaces`` / ``--no-auto-create-workspaces``);
a flag overrides the environment. ``--help`` lists them all with their variable and default,
read from the settings model. ``token`` loads ``JWT_SECRET`` and the token helpers only.
``healthcheck`` asks ``GET /health`` of the server on this machine (the container's
``HEALTHCHECK``) and exits 0 when it answers 200, 1 otherwise.
"""

from __future__ import annotations

import argparse
import logging
import sys
from enum import Enum
from typing import TYPE_CHECKING, Any, get_args

from pydantic.fields import FieldInfo

from .config import ConfigError, Settings, SigningSettings, load_settings

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

log = logging.getLogger("server")

TOKEN_ROLES = ("service", "admin")  # auth.GlobalRole, but the plain user (not imported: speed)


def uvicorn_config(app: FastAPI, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration the service runs with (tests use it too, with port 0)."""
    import uvicorn

    from .logs import quiet_refusals
    from .serving import server_options, trust_proxies

    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level.lower(),
        # The frame limit sits above MAX_MESSAGE_SIZE so that the service, not the protocol
        # layer, decides, and answers with close code 1009 and a reason.
        "ws_max_size": settings.max_message_size + 1024,
        "ws_per_message_deflate": False,
        "ws_ping_interval": settings.heartbeat_interval,
        "ws_ping_timeout": settings.heartbeat_interval,
        "lifespan": "on",
        "log_config": None,  # uvicorn's lines go to the service's handler (``logs.configure_logging``)
        # Bounded request heads, an answer to every upgrade, SHUTDOWN_TIMEOUT (``serving``).
        **server_options(settings),
    }
    options.update(overrides)
    config = uvicorn.Config(app, **options)
    trust_proxies(config)
    quiet_refusals()
    return config


# -- flags from the settings model ------------------------------------------------------------------


def _describe_default(field: FieldInfo) -> str:
    default = field.get_default(call_default_factory=True)
    if default is None:
        return "unset"
    if isinstance(default, Enum):
        return str(default.value)
    if isinstance(default, bool):
        return str(default).lower()
    return str(default)


def _choices(field: FieldInfo) -> list[str] | None:
    annotation = field.annotation
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, Enum):
            return [str(member.value) for member in candidate]
        literal = [arg for arg in get_args(candidate) if isinstance(arg, str)]
        if literal and getattr(candidate, "__origin__", None) is not None:
            return literal
    return None


def _is_bool(field: FieldInfo) -> bool:
    return field.annotation is bool


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per field of ``Settings``: its help names the variable and the default. Flags
    left out are absent from the parsed namespace (so the main parser's and the ``serve``
    command's do not overwrite each other)."""
    group = parser.add_argument_group(
        "settings", "each flag overrides its environment variable; see the README's Configuration table"
    )
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        variable = name.upper()
        choices = _choices(field)
        shown = f" ({'|'.join(choices)})" if choices else ""
        text = f"{variable}{shown}, default: {_describe_default(field)}"
        if _is_bool(field):
            group.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=text
            )
        else:
            group.add_argument(flag, dest=name, metavar="VALUE", default=argparse.SUPPRESS, help=text)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m server",
        usage="python -m server [serve] [--SETTING VALUE ...]\n       python -m server token --user ID "
        "[--name NAME] [--role service|admin] [--ttl SECONDS]\n"
        "       python -m server healthcheck [--port PORT]",
        description="Real-time collaboration service: Yjs document sync, presence, agent monitoring "
        "and events. Settings come from the environment; a flag overrides its variable.",
    )
    commands = parser.add_subparsers(dest="command")
    add_setting_flags(parser)
    serve = commands.add_parser("serve", help="run the server (the default)")
    add_setting_flags(serve)
    token = commands.add_parser(
        "token",
        help="mint a token signed with JWT_SECRET (for development and scripts; without JWT_SECRET, "
        "one an open server accepts as naming you)",
    )
    token.add_argument("--user", required=True, help="user id (the 'sub' claim)")
    token.add_argument("--name", help="display name (defaults to the user id)")
    token.add_argument("--role", choices=TOKEN_ROLES, help="service (agent publishers) or admin")
    token.add_argument(
        "--ttl", type=float, default=24 * 3600, help="seconds until it expires (default: a day)"
    )
    check = commands.add_parser(
        "healthcheck", help="exit 0 if the server on this machine answers GET /health with 200, else 1"
    )
    add_setting_flags(check)
    return parser.parse_args(argv)


def overrides_of(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags."""
    return {name: value for name in Settings.model_fields if (value := getattr(args, name, None)) is not None}


# -- commands -----------------------------------------------------------------------------------------


def mint(args: argparse.Namespace) -> int:
    from .auth import mint_token

    try:
        secret = SigningSettings().jwt_secret
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not secret:
        # An open server (no JWT_SECRET) reads a token's claims without checking the signature:
        # the token names the caller, which a tokenless request cannot do.
        import secrets

        secret = secrets.token_hex(32)
        print(
            "note: JWT_SECRET is not set: this token is signed with a throwaway key. A server without "
            "JWT_SECRET (open, development only) reads it as naming you; one with JWT_SECRET refuses it.",
            file=sys.stderr,
        )
    print(mint_token(secret, user_id=args.user, name=args.name, role=args.role, ttl=args.ttl))
    return 0


def healthcheck(settings: Settings) -> int:
    import urllib.error
    import urllib.request

    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    url = f"http://{host}:{settings.port}/health"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    print(f"{url}: {status}")
    return 0 if status == 200 else 1


def banner(settings: Settings) -> list[str]:
    """What the start prints: where to connect, the auth mode, the store and the broker."""
    from crdt_store import describe_database

    from . import __version__
    from .logs import redact

    host = "localhost" if settings.host in ("0.0.0.0", "::", "") else settings.host
    http = f"http://{host}:{settings.port}"
    ws = f"ws://{host}:{settings.port}"
    auth = (
        "JWT (HS256): every request needs a token"
        if settings.auth_enabled
        else "open (no JWT_SECRET): clients without a token are guests; development only"
    )
    broker = f"Redis at {redact(settings.redis_url)}" if settings.redis_url else "in-process (one instance)"
    return [
        f"realtime-collaboration {__version__} ({settings.environment.value})",
        f"  documents: {ws}/ws/workspaces/{{workspace_id}}[/{{path}}]",
        f"  events:    {ws}/ws, {ws}/ws/agents, {ws}/ws/workspaces",
        f"  API docs:  {http}/docs",
        f"  demo:      {http}/demo",
        f"  metrics:   {http}/metrics, status: {http}/status",
        f"  auth:      {auth}",
        f"  store:     {describe_database(settings.database_url)}",
        f"  broker:    {broker}",
    ]


def tune_garbage_collector() -> None:
    """Collect less often, and never scan what exists once the service is built. The service keeps
    many long-lived objects per connection (protocol, queues, tasks): with Python's default
    thresholds, the collections triggered by each connection's allocations walk all of them again,
    which was about 40 % of the CPU a join costs (``benchmarks/README.md``)."""
    import gc

    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def serve(settings: Settings) -> int:
    from .app import create_app
    from .logs import configure_logging
    from .serving import DrainingServer

    configure_logging(settings.log_level, json_lines=settings.json_logs, secrets=[settings.jwt_secret or ""])
    for line in banner(settings):
        log.info("%s", line)
    app = create_app(settings)
    server = DrainingServer(uvicorn_config(app, settings), drain=app.drain, timeout=settings.shutdown_timeout)
    tune_garbage_collector()
    server.run()
    return 0 if server.started else 3


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "token":
        return mint(args)
    try:
        settings = load_settings(**overrides_of(args))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "healthcheck":
        return healthcheck(settings)
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
