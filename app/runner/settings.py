"""The runner's settings, from the environment, and the values of its options.

The runner may run on another machine than the service, so none of the service's own
settings are read here; what both read is in :mod:`app.shared_settings`.
"""
from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.shared_settings import (
    CLAUDE_PROGRAM, PROJECT_ROOT, ConfigError, api_token, whole_number,
)

DEFAULT_API_BASE = "http://127.0.0.1:8000"
DEFAULTS: dict[str, Any] = {
    "AGENT_API_BASE": DEFAULT_API_BASE,
    "AGENT_TASK_TIMEOUT": 3600.0,
    "AGENT_CANCEL_GRACE_SECONDS": 10.0,
    "AGENT_RUNNER_DIR": str(PROJECT_ROOT / "logs" / "runner"),
    "AGENT_TASK_LOG_MAX_BYTES": 10 * 1024 * 1024,
    "AGENT_TASK_LOG_KEEP_DAYS": 14,
}
SECONDS_SETTINGS = ("AGENT_TASK_TIMEOUT", "AGENT_CANCEL_GRACE_SECONDS")
"""Settings that are a positive number of seconds."""
MIN_TASK_LOG_BYTES = 4096
"""Room for the beginning, the end and the line saying how much was left out."""
MAX_EXECUTOR_CHARS = 200
"""The longest ``executor`` the service takes."""


@dataclass(frozen=True)
class RunnerSettings:
    """What the runner needs; it runs without an app, talking to the service over HTTP
    only, and keeps its own files in ``runner_dir``."""

    api_base: str
    api_token: str | None
    task_timeout: float
    cancel_grace_seconds: float
    """How long a command's group has between SIGTERM and SIGKILL after a request to
    cancel its task."""
    runner_dir: Path
    workdir: Path
    task_log_max_bytes: int
    task_log_keep_days: int
    allowed_programs: frozenset[str]
    """The programs a task's command may start with; any other command is refused."""
    executor: str
    """Who runs the tasks, named in each report that ends a task: ``AGENT_EXECUTOR``,
    else the host name (as in the runner ids)."""


def positive_seconds(text: str) -> float:
    """A finite number of seconds above zero, from text (ValueError otherwise)."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise ValueError(f"expected a positive number of seconds, not {text!r}")
    return seconds


def api_url(text: str, name: str = "the API address") -> str:
    """An ``http://`` or ``https://`` address with a host, without a trailing slash."""
    url = text.strip().rstrip("/")
    scheme, _, rest = url.partition("://")
    if scheme.lower() not in {"http", "https"} or not rest or rest.startswith("/"):
        raise ConfigError(f"{name} must be an http:// or https:// address, not {text!r}")
    return url


def executor_name(text: str, name: str) -> str:
    """``text`` as the runner's name in its reports (``executor``): not blank, and at most
    ``MAX_EXECUTOR_CHARS`` characters. A :class:`ConfigError` naming ``name`` otherwise."""
    if not text.strip():
        raise ConfigError(f"{name} must not be empty")
    if len(text) > MAX_EXECUTOR_CHARS:
        raise ConfigError(f"{name} must be at most {MAX_EXECUTOR_CHARS} characters, "
                          f"not {len(text)}")
    return text


def programs(words: Iterable[str]) -> frozenset[str]:
    """Program names or paths, each of the ``words`` split at commas and whitespace."""
    return frozenset(name for word in words for name in re.split(r"[\s,]+", word) if name)


def runner_from_env(environ: Mapping[str, str] | None = None) -> RunnerSettings:
    """The runner's settings, defaults filled in; an empty variable counts as unset. A
    bad value raises :class:`ConfigError` naming the variable."""
    env = os.environ if environ is None else environ
    settings: dict[str, Any] = {name: env.get(name) or default
                                for name, default in DEFAULTS.items()}
    for name in SECONDS_SETTINGS:
        if env.get(name):
            try:
                settings[name] = positive_seconds(env[name])
            except ValueError as exc:
                raise ConfigError(f"{name}: {exc}") from exc
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
        cancel_grace_seconds=settings["AGENT_CANCEL_GRACE_SECONDS"],
        runner_dir=Path(settings["AGENT_RUNNER_DIR"]),
        workdir=workdir,
        task_log_max_bytes=settings["AGENT_TASK_LOG_MAX_BYTES"],
        task_log_keep_days=settings["AGENT_TASK_LOG_KEEP_DAYS"],
        allowed_programs=programs([env.get("AGENT_ALLOW_PROGRAMS", "")]) or frozenset(
            {CLAUDE_PROGRAM}),
        executor=executor_name(env.get("AGENT_EXECUTOR") or socket.gethostname(),
                               "AGENT_EXECUTOR"),
    )
