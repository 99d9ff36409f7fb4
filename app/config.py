"""Configuration read from the environment, in one place.

The app factory uses :func:`from_env`; the runner, which works without an app, uses
:func:`runner_from_env`, which builds on it so both agree on defaults. A value that
cannot be used raises :class:`ConfigError` naming the variable; entry points turn it
into one line on stderr with :func:`exit_on_config_error`.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent

DEFAULTS: dict[str, Any] = {
    "AGENT_LOGS_DIR": str(PROJECT_ROOT / "logs"),
    "METRICS_WINDOW_DAYS": 7,
    "AGENT_ROUTING_FILE": None,
    "AGENT_FSYNC": True,
    "AGENT_API_TOKEN": None,
    "MAX_CONTENT_LENGTH": 1024 * 1024,
    "AGENT_ALLOWED_HOSTS": ("localhost", "127.0.0.1", "::1"),
    "AGENT_METRICS_MAX_MODELS": 100,
    "AGENT_MAX_ATTEMPTS": 3,
    "AGENT_DATABASE_URL": None,
    "AGENT_DATABASE_POOL_SIZE": 8,
}
ANY_HOST = "*"
MIN_TOKEN_CHARS = 16


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


def _flag(text: str) -> bool:
    return text.strip().lower() not in {"0", "false", "no", "off"}


def whole_number(env: Any, name: str, low: int, high: int) -> int:
    """An integer setting within [low, high]; ValueError naming the variable otherwise."""
    text = env[name]
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ConfigError(f"{name} must be a whole number from {low} to {high}, not {text!r}")
    return value


def api_token(env: Any) -> str | None:
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


def from_env(environ: dict[str, str] | None = None) -> dict[str, Any]:
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
    return config


def metrics_path(logs_dir: str | os.PathLike[str]) -> Path:
    return Path(logs_dir) / "metrics.jsonl"


def tasks_path(logs_dir: str | os.PathLike[str]) -> Path:
    return Path(logs_dir) / "tasks.jsonl"


def positive_seconds(text: str) -> float:
    """A finite number of seconds above zero, from text (ValueError otherwise)."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise ValueError(f"expected a positive number of seconds, not {text!r}")
    return seconds


@dataclass(frozen=True)
class RunnerSettings:
    """What ``scripts/agent_runner.py`` needs; it runs without an app, talking to the
    service over HTTP only, and keeps its own files in ``runner_dir``."""

    api_base: str
    api_token: str | None
    task_timeout: float
    runner_dir: Path
    workdir: Path
    task_log_max_bytes: int
    task_log_keep_days: int


RUNNER_DEFAULTS: dict[str, Any] = {
    "AGENT_API_BASE": "http://127.0.0.1:8000",
    "AGENT_TASK_TIMEOUT": 3600.0,
    "AGENT_RUNNER_DIR": str(PROJECT_ROOT / "logs" / "runner"),
    "AGENT_TASK_LOG_MAX_BYTES": 10 * 1024 * 1024,
    "AGENT_TASK_LOG_KEEP_DAYS": 14,
}
MIN_TASK_LOG_BYTES = 4096
"""Room for the beginning, the end and the line saying how much was left out."""


def api_url(text: str, name: str = "the API address") -> str:
    """An ``http://`` or ``https://`` address with a host, without a trailing slash."""
    url = text.strip().rstrip("/")
    scheme, _, rest = url.partition("://")
    if scheme.lower() not in {"http", "https"} or not rest or rest.startswith("/"):
        raise ConfigError(f"{name} must be an http:// or https:// address, not {text!r}")
    return url


def runner_from_env(environ: dict[str, str] | None = None) -> RunnerSettings:
    """The runner's settings; a bad value raises :class:`ConfigError`. The server's own
    settings are not the runner's business: it may run on another machine."""
    env = os.environ if environ is None else environ
    settings = {name: env.get(name) or default for name, default in RUNNER_DEFAULTS.items()}
    if env.get("AGENT_TASK_TIMEOUT"):
        try:
            settings["AGENT_TASK_TIMEOUT"] = positive_seconds(env["AGENT_TASK_TIMEOUT"])
        except ValueError as exc:
            raise ConfigError(f"AGENT_TASK_TIMEOUT: {exc}") from exc
    if env.get("AGENT_TASK_LOG_MAX_BYTES"):
        settings["AGENT_TASK_LOG_MAX_BYTES"] = whole_number(
            env, "AGENT_TASK_LOG_MAX_BYTES", MIN_TASK_LOG_BYTES, 2**40)
    if env.get("AGENT_TASK_LOG_KEEP_DAYS"):
        settings["AGENT_TASK_LOG_KEEP_DAYS"] = whole_number(
            env, "AGENT_TASK_LOG_KEEP_DAYS", 1, 36_500)
    workdir = Path(env.get("AGENT_WORKDIR") or os.getcwd())
    if not workdir.is_dir():
        raise ConfigError(f"AGENT_WORKDIR: {workdir} is not a folder")
    return RunnerSettings(
        api_base=api_url(settings["AGENT_API_BASE"], "AGENT_API_BASE"),
        api_token=api_token(env),
        task_timeout=settings["AGENT_TASK_TIMEOUT"],
        runner_dir=Path(settings["AGENT_RUNNER_DIR"]),
        workdir=workdir,
        task_log_max_bytes=settings["AGENT_TASK_LOG_MAX_BYTES"],
        task_log_keep_days=settings["AGENT_TASK_LOG_KEEP_DAYS"],
    )
