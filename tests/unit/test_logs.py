"""No secret reaches a log line: tokens however they were sent, credentials in URLs, the JWT
secret, in messages and tracebacks alike; and a refused upgrade is logged once."""

from __future__ import annotations

import logging

import pytest

from server.logs import REDACTED, QuietRefusals, RedactSecrets, redact

TOKEN = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz"


def record(msg: str, *args: object, name: str = "uvicorn.error") -> logging.LogRecord:
    return logging.LogRecord(name, logging.DEBUG, __file__, 1, msg, args, None)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            '127.0.0.1:5000 - "WebSocket /ws/workspaces/w?x=1&token=abc.def&y=2" [accepted]',
            '127.0.0.1:5000 - "WebSocket /ws/workspaces/w?x=1&token=[redacted]&y=2" [accepted]',
        ),
        ("< authorization: Bearer not-even-a-jwt", "< authorization: [redacted]"),
        ("< Authorization: Basic dXNlcjpwYXNz", "< Authorization: [redacted]"),
        (f"< sec-websocket-protocol: bearer, {TOKEN}", "< sec-websocket-protocol: bearer, [redacted]"),
        (f"< sec-websocket-protocol: {TOKEN}", "< sec-websocket-protocol: [redacted]"),
        ("< cookie: session=s3cr3t; theme=dark", "< cookie: [redacted]"),
        (f"decoding {TOKEN} failed", "decoding [redacted] failed"),
        (
            "store ready: postgresql://app:hunter2@db:5432/collab",
            "store ready: postgresql://app:[redacted]@db:5432/collab",
        ),
        ("redis at redis://:hunter2@cache:6379/0", "redis at redis://:[redacted]@cache:6379/0"),
    ],
)
def test_redacts_every_way_a_secret_is_written(message: str, expected: str) -> None:
    assert redact(message) == expected


def test_filter_rewrites_formatted_messages_tracebacks_and_the_configured_secret() -> None:
    secret = "the-jwt-secret-value-0123456789abcdef"
    entry = record("%s then %s", f"?token={TOKEN}", secret)
    try:
        raise ValueError(f"bad token {TOKEN} signed with {secret}")
    except ValueError:
        import sys

        entry.exc_info = sys.exc_info()
    assert RedactSecrets([secret]).filter(entry)
    text = logging.Formatter().format(entry)
    assert TOKEN not in text and secret not in text
    assert text.startswith(f"?token={REDACTED} then {REDACTED}")
    assert f"bad token {REDACTED} signed with {REDACTED}" in text


def test_uvicorns_lines_about_a_refused_upgrade_are_dropped_and_others_kept() -> None:
    quiet = QuietRefusals()
    assert not quiet.filter(record('%s - "WebSocket %s" %d', "127.0.0.1:1", "/ws", 401))
    assert not quiet.filter(record("connection rejected (%d %s)", 401, "Unauthorized"))
    assert not quiet.filter(record("ASGI callable returned without completing handshake."))
    assert quiet.filter(record('%s - "WebSocket %s" [accepted]', "127.0.0.1:1", "/ws"))
    assert quiet.filter(record("Exception in ASGI application\n"))


def test_percent_encoded_tokens_are_found_and_control_characters_escaped() -> None:
    secretive = record(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET", f"/w?%74oken={TOKEN.replace('.', '%2E')}", "1.1", 200
    )
    forged = record("refused WebSocket %s", "/ws/x\n2026-11-29 21:00:00,000 ERROR server.auth: forged\x00")
    for entry in (secretive, forged):
        assert RedactSecrets().filter(entry)
    assert TOKEN.split(".")[2] not in secretive.getMessage() and "token=[redacted]" in secretive.getMessage()
    assert (
        forged.getMessage()
        == "refused WebSocket /ws/x\\n2026-11-29 21:00:00,000 ERROR server.auth: forged\\x00"
    )
