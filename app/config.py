"""The service's configuration, read from the environment in one place.

The app factory uses :func:`from_env`. A value that cannot be used raises
:class:`~app.shared_settings.ConfigError` naming the variable; entry points turn it into
one line on stderr with :func:`~app.shared_settings.exit_on_config_error`. What the
runner's settings (``app.runner.settings``) share with these is in
:mod:`app.shared_settings`.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.shared_settings import PROJECT_ROOT, ConfigError, api_token, whole_number

DATABASE_TIMEOUTS: dict[str, tuple[int, int, int]] = {
    "AGENT_DATABASE_CONNECT_TIMEOUT": (5, 2, 600),
    "AGENT_DATABASE_POOL_TIMEOUT": (5, 1, 600),
    "AGENT_DATABASE_STATEMENT_TIMEOUT": (30, 1, 3600),
    "AGENT_DATABASE_LOCK_TIMEOUT": (5, 1, 3600),
}
"""Seconds each wait on PostgreSQL may last: (default, lowest, highest). The connect
timeout starts at 2, as libpq's does."""

DEFAULTS: dict[str, Any] = {
    "AGENT_LOGS_DIR": str(PROJECT_ROOT / "logs"),
    "METRICS_WINDOW_DAYS": 7,
    "AGENT_ROUTING_FILE": None,
    "AGENT_FSYNC": True,
    "AGENT_API_TOKEN": None,
    "AGENT_API_TOKENS_FILE": None,
    "MAX_CONTENT_LENGTH": 1024 * 1024,
    "AGENT_ALLOWED_HOSTS": ("localhost", "127.0.0.1", "::1"),
    "AGENT_METRICS_MAX_MODELS": 100,
    "AGENT_MAX_ATTEMPTS": 3,
    "AGENT_DATABASE_URL": None,
    "AGENT_DATABASE_POOL_SIZE": 8,
    **{name: default for name, (default, _, _) in DATABASE_TIMEOUTS.items()},
}
ANY_HOST = "*"


def _flag(text: str) -> bool:
    return text.strip().lower() not in {"0", "false", "no", "off"}


def database_url(env: Any) -> str | None:
    """``AGENT_DATABASE_URL`` if set: a ``postgresql://`` URL (the message never repeats
    it, since it may hold a password)."""
    url = env.get("AGENT_DATABASE_URL") or None
    if url is not None and not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("AGENT_DATABASE_URL must be a postgresql:// URL, e.g. "
                          "postgresql://user:password@host:5432/agent")
    return url


def host_names(text: str) -> tuple[str, ...]:
    """``AGENT_ALLOWED_HOSTS``: comma-separated host names, lower-cased, ports dropped."""
    names = tuple(host_without_port(part.strip()) for part in text.split(",") if part.strip())
    if not names:
        raise ConfigError(f"AGENT_ALLOWED_HOSTS must name at least one host, not {text!r}")
    return names


def host_without_port(host: str) -> str:
    """``example.com:8000`` -> ``example.com``; ``[::1]:8000`` and ``[::1]`` -> ``::1``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        return host.partition(":")[0]
    return host


def from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The settings, defaults filled in; an empty variable counts as unset. A value out
    of range raises ValueError naming the variable."""
    env = os.environ if environ is None else environ
    config = dict(DEFAULTS)
    if env.get("AGENT_LOGS_DIR"):
        config["AGENT_LOGS_DIR"] = env["AGENT_LOGS_DIR"]
    if env.get("METRICS_WINDOW_DAYS"):
        config["METRICS_WINDOW_DAYS"] = whole_number(env, "METRICS_WINDOW_DAYS", 1, 365)
    if env.get("AGENT_ROUTING_FILE"):
        config["AGENT_ROUTING_FILE"] = env["AGENT_ROUTING_FILE"]
    if env.get("AGENT_FSYNC"):
        config["AGENT_FSYNC"] = _flag(env["AGENT_FSYNC"])
    config["AGENT_API_TOKEN"] = api_token(env)
    if env.get("AGENT_API_TOKENS_FILE"):
        config["AGENT_API_TOKENS_FILE"] = env["AGENT_API_TOKENS_FILE"]
    if env.get("AGENT_MAX_BODY_BYTES"):
        config["MAX_CONTENT_LENGTH"] = whole_number(env, "AGENT_MAX_BODY_BYTES", 1, 2**31)
    if env.get("AGENT_ALLOWED_HOSTS"):
        config["AGENT_ALLOWED_HOSTS"] = host_names(env["AGENT_ALLOWED_HOSTS"])
    if env.get("AGENT_METRICS_MAX_MODELS"):
        config["AGENT_METRICS_MAX_MODELS"] = whole_number(
            env, "AGENT_METRICS_MAX_MODELS", 1, 10_000)
    if env.get("AGENT_MAX_ATTEMPTS"):
        config["AGENT_MAX_ATTEMPTS"] = whole_number(env, "AGENT_MAX_ATTEMPTS", 1, 100)
    config["AGENT_DATABASE_URL"] = database_url(env)
    if env.get("AGENT_DATABASE_POOL_SIZE"):
        config["AGENT_DATABASE_POOL_SIZE"] = whole_number(env, "AGENT_DATABASE_POOL_SIZE", 1,
                                                          1000)
    config.update(database_timeouts(env))
    return config


def database_timeouts(env: Mapping[str, str]) -> dict[str, int]:
    """The ``AGENT_DATABASE_*_TIMEOUT`` settings, in seconds, defaults filled in."""
    return {name: whole_number(env, name, low, high) if env.get(name) else default
            for name, (default, low, high) in DATABASE_TIMEOUTS.items()}


def metrics_path(logs_dir: str | os.PathLike[str]) -> Path:
    return Path(logs_dir) / "metrics.jsonl"


def tasks_path(logs_dir: str | os.PathLike[str]) -> Path:
    return Path(logs_dir) / "tasks.jsonl"
