"""Smoke test of a running server and the runner.

Start the server with the example routing file first, so that tasks run harmless local
commands instead of an AI model CLI:

    AGENT_ROUTING_FILE=scripts/routing.example.json make run
    scripts/smoke.sh            # in another terminal (or: make smoke; installed: agent-smoke)

It creates two tasks (one that completes, one that fails on purpose), runs the runner
once (``python -m app.runner.cli --once``), then reads both tasks and the metrics back.
Environment: AGENT_API_BASE (default http://127.0.0.1:8000), AGENT_API_TOKEN (sent as a
bearer token on every request when set), AGENT_RUNNER_DIR (the runner's folder, read by
the runner). Prints one PASS or FAIL line per check; exits 0 only if every check passed.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import Any, NoReturn

import requests

from app.runner.settings import DEFAULT_API_BASE
from app.shared_settings import authorization

EXAMPLE_MODEL = "local/echo"
EXAMPLE_PROGRAM = "sh"
"""What the example routing (scripts/routing.example.json) runs, which the runner must allow."""
REQUEST_SECONDS = 30
GOOD_DIRECTION = "smoke test: say hello"
BAD_DIRECTION = "smoke test: FAIL on purpose"


class Smoke:
    """The checks against one API, counting the failed ones."""

    def __init__(self, api_base: str, token: str | None) -> None:
        self.api = api_base.rstrip("/") + "/api/agent"
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = authorization(token)
        self.failed = 0

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The JSON of a successful answer; None for no answer, an HTTP error or no JSON."""
        try:
            response = self.session.request(method, self.api + path, timeout=REQUEST_SECONDS,
                                            **kwargs)
            response.raise_for_status()
            return response.json()
        except requests.RequestException:  # includes an answer that is not JSON
            return None

    def passed(self, what: str) -> None:
        print(f"PASS {what}", flush=True)

    def fail(self, what: str) -> None:
        print(f"FAIL {what}", flush=True)
        self.failed += 1

    def stop(self, what: str) -> NoReturn:
        self.fail(what)
        print("smoke: stopped", flush=True)
        raise SystemExit(1)

    def check(self, what: str, expected: object, actual: object) -> None:
        shown = text(actual)
        if shown == text(expected):
            self.passed(f"{what}: {shown}")
        else:
            self.fail(f"{what}: expected {text(expected)}, got {shown or 'nothing'}")

    def create(self, direction: str, task_type: str) -> str:
        task_id = text(field(self.call("POST", "/tasks", json={
            "direction": direction, "task_type": task_type}), "id"))
        if not task_id:
            self.stop("could not create a task")
        return task_id


def field(value: Any, *keys: str) -> Any:
    """``value[key1][key2]...``, or None where a level is missing or not an object."""
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def text(value: object) -> str:
    return "" if value is None else str(value)


def run_runner() -> int:
    """The runner, once, in its own process: its exit status."""
    return subprocess.run([sys.executable, "-m", "app.runner.cli", "--once",
                           "--allow-program", EXAMPLE_PROGRAM],
                          stdin=subprocess.DEVNULL).returncode


def run_checks(smoke: Smoke) -> None:
    metrics = smoke.call("GET", "/metrics")
    if metrics is None:
        smoke.stop(f"no answer from {smoke.api} (is the server running?)")
    smoke.passed(f"server answers at {smoke.api}")

    model = text(field(smoke.call("GET", "/route", params={"task_type": "impl"}), "model"))
    if model != EXAMPLE_MODEL:
        smoke.stop(f"tasks are routed to '{model}', not to the example routing: start the "
                   "server with AGENT_ROUTING_FILE=scripts/routing.example.json")
    smoke.passed("tasks are routed to the example's harmless commands")

    pending = text(field(smoke.call("GET", "/tasks", params={"status": "pending", "limit": 1}),
                         "total"))
    if pending != "0":
        smoke.stop(f"{pending} task(s) already pending: the runner would run them too; run "
                   "the smoke test against a server with an empty queue")
    smoke.passed("no other task is pending")

    before = {status: field(metrics, "success_rate", status) or 0
              for status in ("completed", "failed")}
    good = smoke.create(GOOD_DIRECTION, "impl")
    bad = smoke.create(BAD_DIRECTION, "review")
    smoke.passed(f"created tasks {good} and {bad}")

    status = run_runner()
    if status == 0:
        smoke.passed("the runner ran the queue and exited 0")
    else:
        smoke.fail(f"the runner exited with status {status}")

    for task_id, expected, direction in ((good, "completed", GOOD_DIRECTION),
                                         (bad, "failed", BAD_DIRECTION)):
        task = smoke.call("GET", f"/tasks/{task_id}")
        smoke.check(f"task {task_id} status", expected, field(task, "status"))
        output = text(field(task, "output"))
        if f"{EXAMPLE_MODEL} received: {direction}" in output:
            smoke.passed(f"task {task_id} output holds its direction")
        else:
            smoke.fail(f"task {task_id} output: {output}")

    metrics = smoke.call("GET", "/metrics")
    smoke.check("metrics: completed tasks", before["completed"] + 1,
                field(metrics, "success_rate", "completed"))
    smoke.check("metrics: failed tasks", before["failed"] + 1,
                field(metrics, "success_rate", "failed"))


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Environment: AGENT_API_BASE, AGENT_API_TOKEN, AGENT_RUNNER_DIR.",
    ).parse_args(argv)
    smoke = Smoke(os.environ.get("AGENT_API_BASE") or DEFAULT_API_BASE,
                  os.environ.get("AGENT_API_TOKEN"))
    run_checks(smoke)
    if smoke.failed:
        print(f"smoke: {smoke.failed} check(s) failed")
        return 1
    print("smoke: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
