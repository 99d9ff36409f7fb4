"""Guards every request passes before routing, so a route added later is covered too.

- ``Host`` must be one of ``AGENT_ALLOWED_HOSTS`` (ports ignored; ``*`` allows any),
  else ``400``: a page on a rebinding domain cannot reach the service through a browser.
- When ``AGENT_API_TOKEN`` is set, every request needs ``Authorization: Bearer <token>``,
  except the paths in :data:`OPEN_PATHS`; an unknown path answers 401 rather than telling
  a stranger which paths exist.
- A request with a body must say ``Content-Type: application/json``, else ``415``: a
  web page can send a "simple" cross-site request (``text/plain``) without a CORS
  preflight, but never one typed as JSON. The service sends no CORS headers.
"""
from __future__ import annotations

import hmac

from flask import Flask, current_app, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import BadRequest, UnsupportedMediaType

from app.config import ANY_HOST, host_without_port
from app.errors import error_response
from app.shared_settings import TOKEN_SCHEME

OPEN_PATHS = frozenset({"/api/health", "/api/openapi.json"})
JSON_MEDIA_TYPE = "application/json"


def _check_host() -> None:
    allowed = current_app.config["AGENT_ALLOWED_HOSTS"]
    if ANY_HOST in allowed:
        return
    host = host_without_port(request.host)
    if host not in allowed:
        raise BadRequest(f"Host {host[:200]!r} is not served here (AGENT_ALLOWED_HOSTS).")


def _presented_token() -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != TOKEN_SCHEME.lower() or not token.strip():
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
    return body, status, {"WWW-Authenticate": TOKEN_SCHEME}


def _has_body() -> bool:
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    return chunked or (request.content_length or 0) > 0


def _require_json_body() -> None:
    if _has_body() and request.mimetype != JSON_MEDIA_TYPE:
        raise UnsupportedMediaType(
            f"Request bodies must be sent as Content-Type: {JSON_MEDIA_TYPE}.")


def init_app(app: Flask) -> None:
    app.before_request(_check_host)
    app.before_request(_require_token)
    app.before_request(_require_json_body)
