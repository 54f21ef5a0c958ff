"""Tokens and HTTP clients for tests of the authenticated server."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import jwt

from server.auth import mint_token

SECRET = "test-secret-long-enough-for-any-hmac-algorithm-" + "0123456789abcdef" * 2


def token(user: str, *, name: str | None = None, role: str | None = None, ttl: float = 3600) -> str:
    return mint_token(SECRET, user_id=user, name=name or user.title(), role=role, ttl=ttl)


def raw_token(header: dict[str, Any], claims: dict[str, Any], key: str | None = SECRET) -> str:
    """A token with any header, signed with HS256 under ``key`` (unsigned when ``key`` is None)."""

    def b64(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    if key is None:
        return f"{b64(header)}.{b64(claims)}."
    return jwt.encode(claims, key, algorithm=header.get("alg", "HS256"), headers=header)


def claims(user: str = "mallory", **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": user, "name": user, "iat": now, "exp": now + 600, **extra}


def client(base_url: str, user: str | None = None, **kwargs: Any) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token(user, **kwargs)}"} if user else {}
    return httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30)
