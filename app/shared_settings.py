"""What the service's settings (``app.config``) and the runner's (``app.runner.settings``)
have in common: the error a setting that cannot be used raises and how entry points
report it, whole-number settings, the project folder their default folders are under,
the rules of ``AGENT_API_TOKEN``, which the server checks and every client sends, and
the program of the built-in routing table, which runners allow by default.

Standard library only: the runner is installed without the service's dependencies.
"""
from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MIN_TOKEN_CHARS = 16
TOKEN_SCHEME = "Bearer"
"""The ``Authorization`` scheme that carries the token."""
CLAUDE_PROGRAM = "claude"
"""The program every route of the service's built-in routing table runs, and so the only
one a runner runs unless told otherwise (``AGENT_ALLOW_PROGRAMS``)."""


class ConfigError(ValueError):
    """A setting or a file it names cannot be used; the message says which and why."""


@contextmanager
def exit_on_config_error(program: str) -> Iterator[None]:
    """Turn a :class:`ConfigError` into one line on stderr and exit status 2."""
    try:
        yield
    except ConfigError as exc:
        print(f"{program}: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def whole_number(env: Mapping[str, str], name: str, low: int, high: int) -> int:
    """An integer setting within [low, high]; ValueError naming the variable otherwise."""
    text = env[name]
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ConfigError(f"{name} must be a whole number from {low} to {high}, not {text!r}")
    return value


def api_token(env: Mapping[str, str]) -> str | None:
    """``AGENT_API_TOKEN`` if set: at least 16 printable ASCII characters, no spaces.

    Anything else could never be sent in an ``Authorization`` header as it is (a
    non-ASCII character) or would be silently changed on the way (padding), so no client
    could authenticate. The message never repeats the token.
    """
    token = env.get("AGENT_API_TOKEN") or None
    if token is None:
        return None
    if not all("!" <= char <= "~" for char in token):
        raise ConfigError("AGENT_API_TOKEN must be printable ASCII without spaces or "
                          "other whitespace (e.g. python3 -c 'import secrets; "
                          "print(secrets.token_urlsafe(32))')")
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"AGENT_API_TOKEN must be at least {MIN_TOKEN_CHARS} characters, "
                          f"not {len(token)}")
    return token


def authorization(token: str) -> str:
    """The ``Authorization`` header of a request that carries ``token``."""
    return f"{TOKEN_SCHEME} {token}"
