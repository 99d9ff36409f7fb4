"""The runner when the API is down, refuses its report, or answers 504 after applying."""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from app.clock import isoformat, utc_now
from tests.runner_support import metric_records, run_runner, runner_env
from tests.support import free_port

TASK = {
    "id": "0123456789abcdef0123456789abcdef", "direction": "say hello", "task_type": "impl",
    "status": "pending", "model": "fake/model", "command": "sh -c 'echo hello from the task'",
    "context": {}, "output": None, "created_at": "2026-03-01T12:00:00+00:00",
    "updated_at": "2026-03-01T12:00:00+00:00", "started_at": None, "duration_seconds": None,
}


class StandInApi(BaseHTTPRequestHandler):
    """Answers JSON and notes every request it gets."""

    requests: list[dict] = []

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, status: int, body: dict) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _note(self, body: dict | None = None) -> None:
        self.requests.append({"method": self.command, "path": self.path, "body": body,
                              "authorization": self.headers.get("Authorization")})

    def _body(self) -> dict:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self._note(body)
        return body


class RefusingApi(StandInApi):
    """Lists one pending task and lets it be claimed, then answers its report with 503."""

    def do_GET(self) -> None:
        self._note()
        self._answer(200, {"tasks": [TASK], "total": 1})

    def do_PATCH(self) -> None:
        body = self._body()
        if body["status"] == "running":
            self._answer(200, {**TASK, "status": "running"})
        else:
            self._answer(503, {"detail": "cannot write the task store"})


OURS = {**TASK, "id": "a" * 32}
"""Its claim and its report are applied, then answered 504 once."""
TAKEN = {**TASK, "id": "b" * 32, "created_at": "2026-03-01T12:00:01+00:00"}
"""Another runner claims it a minute before our claim, which is answered 504 once."""


class GatewayTimeoutApi(StandInApi):
    """A service behind a proxy whose first answer to each PATCH of a task is a 504."""

    tasks: dict[str, dict] = {}
    timed_out: set[tuple[str, str]] = set()

    def do_GET(self) -> None:
        self._note()
        url = urlsplit(self.path)
        if url.path != "/api/agent/tasks":
            self._answer(200, self.tasks[url.path.rsplit("/", 1)[1]])
            return
        query = {name: values[0] for name, values in parse_qs(url.query).items()}
        pending = sorted((task for task in self.tasks.values() if task["status"] == "pending"),
                         key=lambda task: task["created_at"],
                         reverse=query.get("order", "newest") == "newest")
        self._answer(200, {"tasks": pending[:int(query["limit"])], "total": len(pending)})

    def do_PATCH(self) -> None:
        body = self._body()
        task = self.tasks[self.path.rsplit("/", 1)[1]]
        first_time = (task["id"], body["status"]) not in self.timed_out
        self.timed_out.add((task["id"], body["status"]))
        now = utc_now()
        if task["id"] == TAKEN["id"] and first_time:
            task.update(status="running", started_at=isoformat(now - timedelta(minutes=1)))
        elif task["status"] == "pending" and body["status"] == "running" \
                or task["status"] == "running" and body["status"] != "running":
            task.update(body, updated_at=isoformat(now))
            task["started_at"] = task["started_at"] or task["updated_at"]
        elif not first_time:
            self._answer(409, {"detail": f"cannot go from {task['status']}"})
            return
        if first_time:
            self._answer(504, {"detail": "Gateway Timeout"})
        else:
            self._answer(200, task)


@contextmanager
def serving(handler: type[StandInApi]) -> Iterator[str]:
    handler.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def refusing_api() -> Iterator[str]:
    with serving(RefusingApi) as base_url:
        yield base_url


@pytest.fixture
def gateway_timeout_api() -> Iterator[str]:
    GatewayTimeoutApi.tasks = {task["id"]: dict(task) for task in (OURS, TAKEN)}
    GatewayTimeoutApi.timed_out = set()
    with serving(GatewayTimeoutApi) as base_url:
        yield base_url


def test_api_down_is_one_line_and_a_failure(logs_dir: Path):
    base_url = f"http://127.0.0.1:{free_port()}"
    status, stderr = run_runner(runner_env(base_url, logs_dir), "--once", timeout=30)
    assert status == 1
    assert stderr.splitlines() == [
        f"agent_runner ERROR: cannot reach the API at {base_url}: Connection refused"
    ]


def test_a_refused_report_keeps_the_metric_and_names_the_task(refusing_api, logs_dir):
    env = runner_env(refusing_api, logs_dir, AGENT_API_TOKEN="s3cret-runner-token")
    status, stderr = run_runner(env, "--once")
    assert status == 1
    log_path = logs_dir / f"task_{TASK['id']}.log"
    [line] = [line for line in stderr.splitlines() if "ERROR" in line]
    assert f"task {TASK['id']}: report of status completed not delivered" in line
    assert "503: cannot write the task store" in line and str(log_path) in line
    assert "Traceback" not in stderr
    assert log_path.read_text() == "hello from the task\n"

    [record] = metric_records(logs_dir)
    assert (record["task_id"], record["status"], record["model"]) == (
        TASK["id"], "completed", "fake/model")
    reports = [r for r in RefusingApi.requests if r["method"] == "PATCH"
               and r["body"]["status"] != "running"]
    assert len(reports) == 5  # the first try and four retries
    assert {r["body"]["duration_seconds"] for r in reports} == {record["duration_seconds"]}
    assert {r["authorization"] for r in RefusingApi.requests} == {"Bearer s3cret-runner-token"}


def test_a_504_after_the_change_was_applied_is_resolved_by_reading_the_task(
    gateway_timeout_api, logs_dir
):
    status, stderr = run_runner(runner_env(gateway_timeout_api, logs_dir), "--once")
    assert status == 0, stderr
    assert "ERROR" not in stderr and "Traceback" not in stderr
    ours, taken = (GatewayTimeoutApi.tasks[task["id"]] for task in (OURS, TAKEN))
    assert (ours["status"], ours["output"]) == ("completed", "hello from the task\n")
    assert taken["status"] == "running"
    assert not (logs_dir / f"task_{TAKEN['id']}.log").exists()
    assert [record["task_id"] for record in metric_records(logs_dir)] == [OURS["id"]]
    patches = [(r["path"].rsplit("/", 1)[1], r["body"]["status"])
               for r in GatewayTimeoutApi.requests if r["method"] == "PATCH"]
    assert sorted(patches) == sorted([(OURS["id"], "running")] * 2
                                     + [(OURS["id"], "completed")] * 2
                                     + [(TAKEN["id"], "running")] * 2)
    assert f"task {OURS['id']}: claim sent again met 409" in stderr
    assert f"task {TAKEN['id']}: claim sent again met 409" in stderr
