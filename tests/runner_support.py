"""Helpers for the runner's tests: the runner as a real process, and what it leaves."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import requests

from tests.support import ROOT

T = TypeVar("T")
RUNNER = ROOT / "scripts" / "agent_runner.py"
WAIT_SECONDS = 120


def runner_env(base_url: str, logs_dir: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "AGENT_API_BASE": base_url, "AGENT_LOGS_DIR": str(logs_dir), **extra}


def start_runner(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """``scripts/agent_runner.py`` in its own process, from a folder that is not the project."""
    return subprocess.Popen(
        [sys.executable, str(RUNNER), *args], env=env, cwd=env.get("AGENT_WORKDIR", "/"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def run_runner(
    env: dict[str, str], *args: str, timeout: float = WAIT_SECONDS
) -> tuple[int, str]:
    """Run the runner to its end: (exit status, stderr)."""
    process = start_runner(env, *args)
    _, stderr = process.communicate(timeout=timeout)
    return process.returncode, stderr


def create_task(base_url: str, direction: str, task_type: str) -> dict[str, Any]:
    response = requests.post(f"{base_url}/api/agent/tasks",
                             json={"direction": direction, "task_type": task_type}, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()


def get_task(base_url: str, task_id: str) -> dict[str, Any]:
    response = requests.get(f"{base_url}/api/agent/tasks/{task_id}", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def metric_records(logs_dir: Path) -> list[dict[str, Any]]:
    path = logs_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_for(condition: Callable[[], T], what: str, timeout: float = WAIT_SECONDS) -> T:
    """Poll until ``condition()`` is truthy and return it; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def process_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in {"Z", "X"}
