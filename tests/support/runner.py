"""Helpers for the runner's tests: a service routed to stand-in commands, the runner as a
real process, and what they leave behind."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import requests

from tests.support.stores import database_url, stored_records
from bench.servers import RUNNER, GunicornServer

T = TypeVar("T")
WAIT_SECONDS = 120
FAKE_AGENT = Path(__file__).with_name("fake_agent.py")
FAKE_COMMAND = [sys.executable, str(FAKE_AGENT), "--model", "{model}", "--", "{direction}"]
# Starts a child that ignores SIGTERM, writes its pid to the file named by the direction,
# says so, then waits for it: only killing the whole group with SIGKILL ends both.
STUBBORN = ["sh", "-c",
            '(trap "" TERM; exec sleep 600) & echo $! > "$1.tmp" && mv "$1.tmp" "$1"'
            ' && echo "child $! started"; wait',
            "--", "{direction}"]
ROUTING = {
    "spec": {"model": "fake/spec", "command": FAKE_COMMAND},
    "review": {"model": "fake/review", "command": FAKE_COMMAND},
    "test": {"model": "fake/stubborn", "command": STUBBORN},
    "impl": {"model": "fake/missing", "command": ["no-such-agent-cli", "--", "{direction}"]},
}


def start_api(folder: Path, logs_dir: Path, **env: str) -> GunicornServer:
    """gunicorn with the stores in ``logs_dir``, routing tasks to the stand-ins above."""
    routing = folder / "routing.json"
    routing.write_text(json.dumps(ROUTING))
    return GunicornServer(logs_dir, env={"AGENT_ROUTING_FILE": str(routing), "AGENT_FSYNC": "0",
                                         **env}).start()


def restart_api(server: GunicornServer) -> GunicornServer:
    """A new gunicorn on the stopped one's port, stores and settings."""
    again = GunicornServer(server.log_path.parent, workers=server.workers, env=server.env)
    again.port, again.base_url = server.port, server.base_url
    return again.start()


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
    """Every record stored: each line of the JSONL file (a repeated record would show),
    or each row of the database (where a unique constraint allows one per task)."""
    if database_url():
        return stored_records(logs_dir)
    path = logs_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def runs(env: dict[str, str]) -> list[dict[str, Any]]:
    """What the fake agent noted of each of its runs."""
    path = Path(env["FAKE_AGENT_RUNS"])
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def task_log(env: dict[str, str], task_id: str) -> Path:
    return Path(env["AGENT_RUNNER_DIR"]) / "task-logs" / f"task_{task_id}.log"


def outbox(env: dict[str, str]) -> list[dict[str, Any]]:
    """The reports waiting in the runner's outbox."""
    folder = Path(env["AGENT_RUNNER_DIR"]) / "outbox"
    return [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]


def kill_groups(pids: list[int]) -> None:
    """SIGKILL the process groups of commands left running by a runner that was killed."""
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


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


def group_members(pgid: int) -> list[int]:
    """The processes of group ``pgid`` that are alive (zombies waiting for a parent to
    reap them are not)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(group) == pgid and state not in {"Z", "X"}:
            members.append(int(stat.parent.name))
    return members
