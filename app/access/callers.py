"""Who a request comes from: the token it presents, looked up among the tokens the
service accepts (``AGENT_API_TOKEN``, and those of ``AGENT_API_TOKENS_FILE``)."""
from __future__ import annotations

import hmac

from flask import current_app, g

from app.access.roles import ADMIN, Caller
from app.access.token_file import TokenFile

API_TOKEN_NAME = "api-token"
"""The name ``AGENT_API_TOKEN`` goes by (it means ``admin``)."""
UNGUARDED = Caller(None, ADMIN)
"""The caller when no token is configured: the service then listens on loopback only."""


def token_matches(presented: str, expected: str) -> bool:
    """Compare in constant time, so the answer's timing leaks nothing about the token."""
    return hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))


class Tokens:
    """The tokens a service accepts; none configured means every request is ``admin``."""

    def __init__(self, api_token: str | None, tokens_file: str | None) -> None:
        self.api_token = api_token
        self.file = None if tokens_file is None else TokenFile(tokens_file)

    @property
    def required(self) -> bool:
        return self.api_token is not None or self.file is not None

    def caller(self, secret: str) -> Caller | None:
        """The caller presenting ``secret``; None if no accepted token is that."""
        if self.api_token is not None and token_matches(secret, self.api_token):
            return Caller(API_TOKEN_NAME, ADMIN)
        token = None if self.file is None else self.file.find(secret)
        return None if token is None else Caller(token.name, token.role)


def current_caller() -> Caller:
    """The caller of the request being served, on a route that needs a token."""
    caller: Caller = g.caller
    return caller


def known_caller() -> Caller | None:
    """The caller on an open route: None when the request has no accepted token."""
    return g.get("caller")


def tokens() -> Tokens:
    return current_app.extensions["tokens"]
