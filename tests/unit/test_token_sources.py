"""Where a request's token is read from (``server.auth.token_from_scope``): the ``Authorization``
header, the ``token`` query parameter, the subprotocols; the query parameter decoded exactly as
``urllib.parse.parse_qs`` decodes it."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from hypothesis import example, given, settings
from hypothesis import strategies as st

from server.auth import BEARER_SUBPROTOCOL, query_parameter, token_from_scope

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl"

# Query strings built from the pieces that matter: the name, separators, escapes (valid, broken,
# UTF-8), plus signs, empty fields and values.
PIECES = st.sampled_from(
    ["token", "tok", "en", "=", "&", "+", "%", "%2", "%zz", "%74", "%C3%A9", "%FF", "a", " ", ";"]
)


@settings(max_examples=2000)
@given(st.lists(PIECES, max_size=16).map("".join))
@example("token=&token=b")  # an empty value is skipped, as parse_qs skips it
@example("%74oken=a%2Bb+c")  # an escaped name; an escaped plus and a plus meaning a space
@example("token")  # a field without "="
def test_the_query_parameter_is_what_parse_qs_reads(query: str) -> None:
    parsed = parse_qs(query)
    expected = parsed["token"][0] if parsed.get("token") else None
    assert query_parameter(query.encode("latin-1"), "token") == expected


def scope(**parts: Any) -> dict[str, Any]:
    return {"headers": [], "query_string": b"", "subprotocols": [], **parts}


def test_the_token_comes_from_the_header_then_the_query_then_the_subprotocols() -> None:
    everywhere = scope(
        headers=[(b"authorization", b"Bearer header-token")],
        query_string=b"a=1&token=query-token",
        subprotocols=[BEARER_SUBPROTOCOL, "protocol-token"],
    )
    assert token_from_scope(everywhere) == ("header-token", None)
    assert token_from_scope({**everywhere, "headers": []}) == ("query-token", None)
    assert token_from_scope(scope(subprotocols=[BEARER_SUBPROTOCOL, "protocol-token"])) == (
        "protocol-token",
        BEARER_SUBPROTOCOL,
    )
    assert token_from_scope(scope(subprotocols=["y-protocol", JWT])) == (JWT, JWT)
    assert token_from_scope(scope(query_string=b"token=")) == (None, None)
