"""``server.websocket``'s opening handshake (RFC 6455 section 4.2): the checks on the upgrade
request httptools parsed, the accept key, and the protocol object built without uvicorn's
``__init__`` keeping every attribute uvicorn's methods use."""

from __future__ import annotations

import asyncio

import pytest
import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState

from server.websocket import CollabWebSocketProtocol, Refusal, accept_key, check_upgrade

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def headers(*extra: tuple[bytes, bytes], key: bytes | None = KEY, version: bytes | None = b"13") -> list:
    found = [(b"host", b"x"), (b"upgrade", b"websocket"), (b"connection", b"Upgrade"), *extra]
    if key is not None:
        found.append((b"sec-websocket-key", key))
    if version is not None:
        found.append((b"sec-websocket-version", version))
    return found


def test_the_accept_key_is_the_one_in_rfc_6455() -> None:
    # RFC 6455 section 1.3: "the server would respond with s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".
    assert accept_key(KEY) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_a_valid_upgrade_request_gives_its_key() -> None:
    assert check_upgrade("GET", "1.1", headers()) == KEY
    assert check_upgrade("GET", "1.1", headers(key=b" " + KEY + b" ")) == KEY  # optional whitespace
    assert check_upgrade("GET", "1.1", headers(version=b"13 ")) == KEY
    assert check_upgrade("GET", "1.1", headers((b"content-length", b"0"))) == KEY


@pytest.mark.parametrize(
    ("method", "version", "fields", "status", "named"),
    [
        ("POST", "1.1", headers(), 405, b"allow"),
        ("GET", "1.0", headers(), 400, None),
        ("GET", "1.1", headers(key=None), 400, None),
        ("GET", "1.1", headers((b"sec-websocket-key", KEY)), 400, None),  # two keys
        ("GET", "1.1", headers(key=b"not base64!"), 400, None),
        ("GET", "1.1", headers(key=b"c2hvcnQ="), 400, None),  # 5 bytes, not 16
        ("GET", "1.1", headers(version=b"8"), 426, b"sec-websocket-version"),
        ("GET", "1.1", headers(version=None), 426, b"sec-websocket-version"),
        ("GET", "1.1", headers((b"sec-websocket-version", b"13")), 426, b"sec-websocket-version"),
        ("GET", "1.1", headers((b"content-length", b"4")), 400, None),  # a body
        ("GET", "1.1", headers((b"transfer-encoding", b"chunked")), 400, None),
    ],
)
def test_an_invalid_upgrade_request_is_refused_with_a_status_and_a_reason(
    method: str, version: str, fields: list, status: int, named: bytes | None
) -> None:
    refusal = check_upgrade(method, version, fields)
    assert isinstance(refusal, Refusal)
    assert refusal.status == status
    assert refusal.message
    if named is not None:
        assert named in dict(refusal.headers)
    if status == 426:
        assert dict(refusal.headers)[b"sec-websocket-version"] == b"13"


async def test_the_protocol_has_every_attribute_uvicorns_own_constructor_sets() -> None:
    """``CollabWebSocketProtocol.__init__`` replaces uvicorn's (which builds what the class does not
    use); uvicorn's methods, which it inherits, must find all their attributes, which are slots."""
    config = uvicorn.Config(app=lambda *_: None, ws_ping_interval=None)
    config.load()
    loop = asyncio.get_running_loop()
    theirs = WebSocketsSansIOProtocol(config, ServerState(), {}, _loop=loop)
    ours = CollabWebSocketProtocol(config, ServerState(), {}, _loop=loop)
    missing = [name for name in vars(theirs) if not hasattr(ours, name)]
    assert not missing
    # ... in slots: an idle connection holds no per-instance dict
    assert not getattr(ours, "__dict__", {})
