"""Who is calling: a JWT (HS256, ``JWT_SECRET``) from the ``token`` query parameter, an
``Authorization: Bearer`` header, or the WebSocket subprotocol, turned into a ``Principal``.

One expiry rule everywhere (RFC 7519 4.1.4): a token is accepted while the current time is before
its ``exp``, to the second, with no grace: at the upgrade, on every REST request, and on a live
connection, which closes (4401) at that moment. ``nbf`` and ``iat`` may lie up to
``CLOCK_SKEW_SECONDS`` in the future (the issuer's clock may run ahead of ours).

Without ``JWT_SECRET`` (development only) the server is open: a request without a token is a
guest with a generated identity, and a token's claims are read without verification.
"""

from __future__ import annotations

import math
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import jwt

from .vocabulary import is_id

if TYPE_CHECKING:
    from .config import Settings

ALGORITHM = "HS256"
CLOCK_SKEW_SECONDS = 10
BEARER_SUBPROTOCOL = "bearer"
_JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")


class TokenError(Exception):
    """The request has no usable token; the message says why (never the token itself)."""


class GlobalRole(StrEnum):
    USER = "user"
    SERVICE = "service"  # agent publishers
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    name: str
    role: GlobalRole = GlobalRole.USER
    expires_at: float | None = None  # epoch seconds
    guest: bool = False

    @property
    def is_admin(self) -> bool:
        return self.role is GlobalRole.ADMIN


def mint_token(
    secret: str, *, user_id: str, name: str | None = None, role: str | None = None, ttl: float = 3600
) -> str:
    """A signed token, as a team's backend would mint one (used by the CLI and the tests)."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": user_id, "name": name or user_id, "iat": now, "exp": now + int(ttl)}
    if role:
        claims["role"] = role
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


# Verified tokens and their principals, so that a client reconnecting with the same token (a deploy's
# reconnect storm) costs no signature check; the expiry rule is applied at every use.
TOKEN_CACHE_SIZE = 10_000
_verified: dict[tuple[str, str | None], Principal] = {}


def decode_token(token: str, settings: Settings) -> Principal:
    """Verify a token and return its principal, or raise ``TokenError`` saying what is wrong.
    A token verified before is not verified again; its expiry is checked at every call."""
    key = (token, settings.jwt_secret)
    known = _verified.get(key)
    if known is not None:
        if known.expires_at is not None and time.time() >= known.expires_at:
            raise TokenError("token expired")
        return known
    principal = _decode_token(token, settings)
    if len(_verified) >= TOKEN_CACHE_SIZE:
        _verified.clear()
    _verified[key] = principal
    return principal


def _decode_token(token: str, settings: Settings) -> Principal:
    if not _JWT_SHAPE.fullmatch(token):
        raise TokenError("malformed token")
    try:
        if settings.jwt_secret is None:
            claims = jwt.decode(token, options={"verify_signature": False})
            if "exp" in claims:
                _check_expiry(claims)
        else:
            claims = jwt.decode(
                token,
                settings.jwt_secret,
                algorithms=[ALGORITHM],  # pinned: no "none", no RS/HS confusion
                options={"require": ["exp", "sub"], "verify_exp": False},  # checked below, strictly
                leeway=CLOCK_SKEW_SECONDS,
            )
            _check_expiry(claims)
    except jwt.ExpiredSignatureError:
        raise TokenError("token expired") from None
    except jwt.ImmatureSignatureError:
        raise TokenError("token not yet valid") from None
    except jwt.InvalidSignatureError:
        raise TokenError("invalid token signature") from None
    except jwt.InvalidAlgorithmError:
        raise TokenError("token algorithm not allowed") from None
    except jwt.MissingRequiredClaimError as exc:
        raise TokenError(f"token lacks the {exc.claim!r} claim") from None
    except jwt.DecodeError:
        raise TokenError("malformed token") from None
    except jwt.InvalidTokenError as exc:
        raise TokenError(f"invalid token: {exc.__class__.__name__}") from None
    except (OverflowError, ValueError, TypeError):  # claims pyjwt cannot compare (nbf: 10**400)
        raise TokenError("invalid token: a time claim is out of range") from None
    return _principal(claims)


def _expiry(claims: dict[str, Any]) -> float:
    """The ``exp`` claim as epoch seconds. Raises ``TokenError`` unless it is a finite number."""
    exp = claims.get("exp")
    try:
        if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp := float(exp)):
            raise OverflowError
    except OverflowError:
        raise TokenError("token 'exp' must be a number of seconds since the epoch") from None
    return exp


def _check_expiry(claims: dict[str, Any]) -> None:
    if time.time() >= _expiry(claims):
        raise TokenError("token expired")


def _principal(claims: dict[str, Any]) -> Principal:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not is_id(sub):
        raise TokenError("token 'sub' must be 1 to 255 characters, without control characters")
    name = claims.get("name", sub)
    if not isinstance(name, str) or not (name == "" or is_id(name)):
        raise TokenError("token 'name' must be at most 255 characters, without control characters")
    try:
        role = GlobalRole(claims.get("role", GlobalRole.USER))
    except ValueError:
        raise TokenError("token 'role' must be one of: user, service, admin") from None
    expires_at = _expiry(claims) if "exp" in claims else None
    return Principal(user_id=sub, name=name or sub, role=role, expires_at=expires_at)


def guest() -> Principal:
    suffix = secrets.token_hex(4)
    return Principal(user_id=f"guest-{suffix}", name=f"Guest {suffix}", guest=True)


def query_parameter(query: bytes, name: str) -> str | None:
    """The first non-empty value of ``name`` in a query string, decoded as ``parse_qs`` decodes
    it (``&``-separated fields, ``+`` as a space, percent-escapes as UTF-8; fields without ``=`` or
    without a value ignored), without decoding the other fields."""
    for field in query.decode("latin-1").split("&"):
        key, equals, value = field.partition("=")
        if equals and value and unquote(key.replace("+", " ")) == name:
            return unquote(value.replace("+", " "))
    return None


def token_from_scope(scope: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The token of an HTTP or WebSocket request, and the subprotocol to accept if it came that way.

    Looked for in order: ``Authorization: Bearer``, the ``token`` query parameter, the subprotocols
    (``["bearer", "<jwt>"]``, or a lone ``<jwt>``).
    """
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip(), None
    token = query_parameter(scope.get("query_string", b""), "token")
    if token:
        return token, None
    subprotocols: list[str] = scope.get("subprotocols") or []
    if BEARER_SUBPROTOCOL in subprotocols:
        index = subprotocols.index(BEARER_SUBPROTOCOL)
        if index + 1 < len(subprotocols):
            return subprotocols[index + 1], BEARER_SUBPROTOCOL
    for offered in subprotocols:
        if _JWT_SHAPE.fullmatch(offered):
            return offered, offered
    return None, None


def authenticate(scope: Mapping[str, Any], settings: Settings) -> tuple[Principal, str | None]:
    """The request's principal and the subprotocol to accept. Raises ``TokenError``."""
    token, subprotocol = token_from_scope(scope)
    if token is None:
        if settings.auth_enabled:
            raise TokenError(
                "missing token: send it as the token query parameter, a Bearer authorization header or "
                "the bearer subprotocol"
            )
        return guest(), None
    return decode_token(token, settings), subprotocol
