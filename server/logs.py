"""Logging: one handler for the service's lines and uvicorn's, in one format, and no secret in
any line.

``configure_logging`` gives the root logger one handler, writing text lines or JSON objects
(``LOG_FORMAT``); uvicorn's loggers lose any handler of their own and propagate to it, whether
uvicorn was started by ``python -m server`` (``log_config=None``) or as ``uvicorn server.main:app``.
The handler's ``RedactSecrets`` filter sees every record, whatever logger it came from and at
every level (uvicorn's DEBUG lines print request headers).

``QuietRefusals`` keeps uvicorn's own lines about an upgrade the service refused out of the log:
the service logs each refusal once, with its reason (``handshake.refuse``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from urllib.parse import unquote

REDACTED = "[redacted]"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries that log every operation (or every frame) at DEBUG, and the least level they log at,
# so that DEBUG shows the service. SQLAlchemy logs every statement at INFO: WARNING.
CHATTY = {
    "aiosqlite": logging.INFO,
    "asyncio": logging.INFO,
    "asyncpg": logging.INFO,
    "httpcore": logging.INFO,
    "httpx": logging.INFO,
    "multipart": logging.INFO,
    "python_multipart": logging.INFO,
    "hpack": logging.INFO,
    "websockets": logging.INFO,
    "redis": logging.INFO,
    "sqlalchemy": logging.WARNING,
}
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Header values: "authorization: Bearer <token>", "cookie: ...", as uvicorn prints them.
    (
        re.compile(r"((?:proxy-)?authorization|cookie|set-cookie)(\s*[:=]\s*)[^\r\n]*", re.IGNORECASE),
        r"\1\2" + REDACTED,
    ),
    # The WebSocket subprotocols that carry a token: "bearer, <token>".
    (re.compile(r"(\bbearer\s*,\s*)[^\s,]+", re.IGNORECASE), r"\1" + REDACTED),
    # Query parameters: ?token=..., &access_token=...
    (re.compile(r"([?&](?:access_)?token=)[^&\s\"']+", re.IGNORECASE), r"\1" + REDACTED),
    # Anything shaped like a JWT (its header is base64url JSON, so it starts with "eyJ").
    (re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.?[A-Za-z0-9_-]*"), REDACTED),
    # Passwords in URLs: scheme://user:password@host
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@", re.IGNORECASE), r"\1" + REDACTED + "@"),
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with tokens, credentials and the given secrets replaced by ``[redacted]``. Text
    with percent-encoding (a URL as received) is looked at decoded too, and written decoded when
    that hides something."""
    cleaned = _redact(text, secrets)
    if "%" in text:
        decoded = unquote(text)
        if decoded != text and _redact(decoded, secrets) != decoded:
            cleaned = _redact(decoded, secrets)
    return cleaned


def _redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


# Line breaks and other control characters a client put in a path or header would forge log lines.
_CONTROL = {code: f"\\x{code:02x}" for code in [*range(0x09), *range(0x0A, 0x20), 0x7F]}
_CONTROL.update({0x0A: "\\n", 0x0D: "\\r"})


def escape_controls(text: str) -> str:
    """``text`` on one line: control characters (but tab) written as escapes."""
    return text.translate(_CONTROL)


class RedactSecrets(logging.Filter):
    """Rewrites each record's message (and traceback) without secrets, and its message on one
    line (control characters escaped). A handler filter: it sees the records of every logger
    that propagates to the handler."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = escape_controls(redact(message, self.secrets))
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        return True


class QuietRefusals(logging.Filter):
    """Drops uvicorn's lines about a refused WebSocket upgrade: its status line, the protocol
    library's "connection rejected", and the false "returned without completing handshake" error
    that follows every refusal made with an HTTP response."""

    _DROPPED = frozenset(
        {
            '%s - "WebSocket %s" %d',
            '%s - "WebSocket %s" 403',
            "connection rejected (%d %s)",
            "ASGI callable returned without completing handshake.",
        }
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in self._DROPPED


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (ISO 8601, UTC, with ``Z``), ``level``, ``logger``,
    ``message``, and ``exception`` (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False)


class QuietFrames(logging.Filter):
    """Drops the WebSocket library's DEBUG trace of every frame and state change (which uvicorn
    routes through its own logger), keeping its trace of each handshake's headers (redacted):
    DEBUG shows the service and the upgrades, not every message."""

    _FRAME = re.compile(r"^(?:[<>] (?:TEXT|BINARY|CLOSE|PING|PONG|CONT|EOF)\b|= connection is )")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.INFO or f"{os.sep}websockets{os.sep}" not in record.pathname:
            return True
        return not self._FRAME.match(record.getMessage())


def configure_logging(level: str, *, json_lines: bool = False, secrets: Iterable[str] = ()) -> None:
    """One stderr handler on the root logger, writing text lines (or JSON objects with
    ``json_lines``), redacting ``secrets`` and every token; uvicorn's loggers write through it."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(FORMAT))
    handler.addFilter(RedactSecrets(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    if not any(isinstance(f, QuietFrames) for f in handler.filters):
        handler.addFilter(QuietFrames())
    numeric = logging.getLevelName(level)
    for name, least in CHATTY.items():
        logging.getLogger(name).setLevel(max(numeric, least))


def quiet_refusals() -> None:
    """Install ``QuietRefusals`` on uvicorn's error logger (idempotent)."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, QuietRefusals) for f in logger.filters):
        logger.addFilter(QuietRefusals())
