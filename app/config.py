"""Configuration read from the environment, in one place.

The app factory uses :func:`from_env`; the runner, which works without an app, uses
:func:`runner_from_env`, which builds on it so both agree on defaults.
"""
from __future__ import annotations

import os
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
}


def _flag(text: str) -> bool:
    return text.strip().lower() not in {"0", "false", "no", "off"}


def _whole_number(env: Any, name: str, low: int, high: int) -> int:
    """An integer setting within [low, high]; ValueError naming the variable otherwise."""
    text = env[name]
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high}, not {text!r}")
    return value


def from_env(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """The settings, defaults filled in; an empty variable counts as unset. A value out
    of range raises ValueError naming the variable."""
    env = os.environ if environ is None else environ
    config = dict(DEFAULTS)
    if env.get("AGENT_LOGS_DIR"):
        config["AGENT_LOGS_DIR"] = env["AGENT_LOGS_DIR"]
    if env.get("METRICS_WINDOW_DAYS"):
        config["METRICS_WINDOW_DAYS"] = _whole_number(env, "METRICS_WINDOW_DAYS", 1, 365)
    if env.get("AGENT_ROUTING_FILE"):
        config["AGENT_ROUTING_FILE"] = env["AGENT_ROUTING_FILE"]
    if env.get("AGENT_FSYNC"):
        config["AGENT_FSYNC"] = _flag(env["AGENT_FSYNC"])
    if env.get("AGENT_API_TOKEN"):
        config["AGENT_API_TOKEN"] = env["AGENT_API_TOKEN"]
    if env.get("AGENT_MAX_BODY_BYTES"):
        config["MAX_CONTENT_LENGTH"] = _whole_number(env, "AGENT_MAX_BODY_BYTES", 1, 2**31)
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
    """What ``scripts/agent_runner.py`` needs; it runs without an app."""

    api_base: str
    api_token: str | None
    task_timeout: float
    logs_dir: Path
    workdir: Path


RUNNER_DEFAULTS: dict[str, Any] = {
    "AGENT_API_BASE": "http://127.0.0.1:8000",
    "AGENT_TASK_TIMEOUT": 3600.0,
}


def runner_from_env(environ: dict[str, str] | None = None) -> RunnerSettings:
    """The runner's settings; a bad ``AGENT_TASK_TIMEOUT`` raises ValueError."""
    env = os.environ if environ is None else environ
    timeout = RUNNER_DEFAULTS["AGENT_TASK_TIMEOUT"]
    if env.get("AGENT_TASK_TIMEOUT"):
        try:
            timeout = positive_seconds(env["AGENT_TASK_TIMEOUT"])
        except ValueError as exc:
            raise ValueError(f"AGENT_TASK_TIMEOUT: {exc}") from exc
    return RunnerSettings(
        api_base=(env.get("AGENT_API_BASE") or RUNNER_DEFAULTS["AGENT_API_BASE"]).rstrip("/"),
        api_token=env.get("AGENT_API_TOKEN") or None,
        task_timeout=timeout,
        logs_dir=Path(from_env(env)["AGENT_LOGS_DIR"]),
        workdir=Path(env.get("AGENT_WORKDIR") or os.getcwd()),
    )
