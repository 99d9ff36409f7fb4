"""Configuration read from the environment, in one place.

The app factory uses :func:`from_env`; the runner, which works without an app, uses the
same function so both agree on defaults.
"""
from __future__ import annotations

import os
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
    return text.strip().lower() not in {"0", "false", "no", "off", ""}


def from_env(environ: dict[str, str] | None = None) -> dict[str, Any]:
    env = os.environ if environ is None else environ
    config = dict(DEFAULTS)
    if env.get("AGENT_LOGS_DIR"):
        config["AGENT_LOGS_DIR"] = env["AGENT_LOGS_DIR"]
    if env.get("METRICS_WINDOW_DAYS"):
        config["METRICS_WINDOW_DAYS"] = int(env["METRICS_WINDOW_DAYS"])
    if env.get("AGENT_ROUTING_FILE"):
        config["AGENT_ROUTING_FILE"] = env["AGENT_ROUTING_FILE"]
    if "AGENT_FSYNC" in env:
        config["AGENT_FSYNC"] = _flag(env["AGENT_FSYNC"])
    if env.get("AGENT_API_TOKEN"):
        config["AGENT_API_TOKEN"] = env["AGENT_API_TOKEN"]
    if env.get("AGENT_MAX_BODY_BYTES"):
        config["MAX_CONTENT_LENGTH"] = int(env["AGENT_MAX_BODY_BYTES"])
    return config


def metrics_path(logs_dir: str | os.PathLike[str]) -> Path:
    return Path(logs_dir) / "metrics.jsonl"


def tasks_path(logs_dir: str | os.PathLike[str]) -> Path:
    return Path(logs_dir) / "tasks.jsonl"
