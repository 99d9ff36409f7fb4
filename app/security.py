"""Bearer-token access control for the whole app.

When ``AGENT_API_TOKEN`` is set, every request needs ``Authorization: Bearer <token>``,
except the paths in :data:`OPEN_PATHS`. The check runs before routing, so a route added
later is protected without doing anything, and an unknown path answers 401 rather than
telling a stranger which paths exist.
"""
from __future__ import annotations

import hmac

from flask import Flask, current_app, request
from flask.typing import ResponseReturnValue

from app.errors import error_response

OPEN_PATHS = frozenset({"/api/health", "/api/openapi.json"})
SCHEME = "Bearer"


def _presented_token() -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != SCHEME.lower() or not token.strip():
        return None
    return token.strip()


def token_matches(presented: str, expected: str) -> bool:
    """Compare in constant time, so the answer's timing leaks nothing about the token."""
    return hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))


def _require_token() -> ResponseReturnValue | None:
    expected = current_app.config.get("AGENT_API_TOKEN")
    if not expected or request.path in OPEN_PATHS:
        return None
    presented = _presented_token()
    if presented is not None and token_matches(presented, expected):
        return None
    detail = "Missing bearer token." if presented is None else "Invalid bearer token."
    body, status = error_response(401, detail)
    return body, status, {"WWW-Authenticate": SCHEME}


def init_app(app: Flask) -> None:
    app.before_request(_require_token)
