"""``serving.ProxyHeaders`` does what uvicorn's ``ProxyHeadersMiddleware`` does to a request's
scope (client address and scheme from ``X-Forwarded-For`` / ``X-Forwarded-Proto`` when the peer
is a trusted proxy), for any headers, while returning the application's coroutine unawaited."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from server.serving import ProxyHeaders

TRUSTED = "127.0.0.1, 10.0.0.0/8"
FORWARDED_VALUES = st.sampled_from(
    [
        "203.0.113.7",
        "10.1.2.3",
        "203.0.113.7, 10.1.2.3",
        "[2001:db8::1]:443",
        "198.51.100.2:8080",
        "",
        " ",
        "x, y",
    ]
)
HEADERS = st.lists(
    st.one_of(
        st.tuples(st.just(b"x-forwarded-for"), FORWARDED_VALUES.map(str.encode)),
        st.tuples(
            st.just(b"x-forwarded-proto"), st.sampled_from([b"https", b"http", b"wss", b" ws ", b"ftp", b""])
        ),
        st.tuples(st.just(b"host"), st.just(b"example.org")),
    ),
    max_size=4,
)


async def scope_after(middleware_class: type, scope: dict[str, Any]) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def app(inner: dict[str, Any], _receive: Any, _send: Any) -> None:
        seen.update(inner)

    middleware = middleware_class(app, trusted_hosts=TRUSTED)
    await middleware(scope, None, None)
    return seen


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(["http", "websocket"]),
    peer=st.sampled_from(["127.0.0.1", "10.9.9.9", "192.0.2.1"]),
    headers=HEADERS,
)
@example(kind="websocket", peer="127.0.0.1", headers=[(b"x-forwarded-proto", b"https")])
def test_the_scope_is_rewritten_as_uvicorn_rewrites_it(
    kind: str, peer: str, headers: list[tuple[bytes, bytes]]
) -> None:
    scope = {
        "type": kind,
        "client": (peer, 5000),
        "scheme": "ws" if kind == "websocket" else "http",
        "headers": headers,
    }
    ours = asyncio.run(scope_after(ProxyHeaders, copy.deepcopy(scope)))
    uvicorns = asyncio.run(scope_after(ProxyHeadersMiddleware, copy.deepcopy(scope)))
    assert ours == uvicorns


def test_the_application_coroutine_is_returned_not_awaited() -> None:
    async def app(_scope: Any, _receive: Any, _send: Any) -> None:
        return None

    result = ProxyHeaders(app)({"type": "websocket", "client": None, "headers": []}, None, None)  # type: ignore[arg-type]
    assert asyncio.iscoroutine(result) and result.cr_code is app.__code__
    result.close()
