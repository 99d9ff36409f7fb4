"""Guards every request passes before routing, so a route added later is covered too.

- ``Host`` must be one of ``AGENT_ALLOWED_HOSTS`` (ports ignored; ``*`` allows any),
  else ``400``: a page on a rebinding domain cannot reach the service through a browser.
- When tokens are configured (``AGENT_API_TOKEN``, ``AGENT_API_TOKENS_FILE``), every
  request needs ``Authorization: Bearer <token>``, except the open routes; an unknown
  path answers 401 rather than telling a stranger which paths exist. The token's role
  must be one the route allows (:mod:`app.access.roles`), else ``403``.
- A request with a body must say ``Content-Type: application/json``, else ``415``: a
  web page can send a "simple" cross-site request (``text/plain``) without a CORS
  preflight, but never one typed as JSON. The service sends no CORS headers.
"""
from __future__ import annotations

from flask import Flask, current_app, g, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import BadRequest, UnsupportedMediaType

from app.access.callers import UNGUARDED, Tokens, tokens
from app.access.roles import ADMIN, OPEN_ENDPOINTS, ROUTE_ROLES
from app.config import ANY_HOST, host_without_port
from app.errors import error_response
from app.shared_settings import TOKEN_SCHEME

JSON_MEDIA_TYPE = "application/json"
ADMIN_ONLY = frozenset({ADMIN})


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


def _authenticate() -> ResponseReturnValue | None:
    """Set ``g.caller`` from the token, and refuse a request its role may not make."""
    accepted = tokens()
    if not accepted.required:
        g.caller = UNGUARDED
        return None
    presented = _presented_token()
    g.caller = None if presented is None else accepted.caller(presented)
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    if g.caller is None:
        detail = "Missing bearer token." if presented is None else "Invalid bearer token."
        body, status = error_response(401, detail)
        return body, status, {"WWW-Authenticate": TOKEN_SCHEME}
    # No route matched (404, 405), or OPTIONS, which tells only the methods a route has.
    if request.endpoint is not None and request.method != "OPTIONS":
        g.caller.check(ROUTE_ROLES.get(request.endpoint, ADMIN_ONLY))
    return None


def _has_body() -> bool:
    chunked = "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    return chunked or (request.content_length or 0) > 0


def _require_json_body() -> None:
    if _has_body() and request.mimetype != JSON_MEDIA_TYPE:
        raise UnsupportedMediaType(
            f"Request bodies must be sent as Content-Type: {JSON_MEDIA_TYPE}.")


def init_app(app: Flask) -> None:
    app.extensions["tokens"] = Tokens(app.config.get("AGENT_API_TOKEN"),
                                      app.config.get("AGENT_API_TOKENS_FILE"))
    app.before_request(_check_host)
    app.before_request(_authenticate)
    app.before_request(_require_json_body)
