"""The runner when the API is down or refuses its report."""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.runner_support import metric_records, run_runner, runner_env
from tests.support import free_port

TASK = {
    "id": "0123456789abcdef0123456789abcdef", "direction": "say hello", "task_type": "impl",
    "status": "pending", "model": "fake/model", "command": "sh -c 'echo hello from the task'",
    "context": {}, "output": None, "created_at": "2026-03-01T12:00:00+00:00",
    "updated_at": "2026-03-01T12:00:00+00:00", "started_at": None, "duration_seconds": None,
}


class RefusingApi(BaseHTTPRequestHandler):
    """Lists one pending task and lets it be claimed, then answers its report with 503."""

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

    def do_GET(self) -> None:
        self._note()
        self._answer(200, {"tasks": [TASK], "total": 1})

    def do_PATCH(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self._note(body)
        if body["status"] == "running":
            self._answer(200, {**TASK, "status": "running"})
        else:
            self._answer(503, {"detail": "cannot write the task store"})


@pytest.fixture
def refusing_api() -> Iterator[str]:
    RefusingApi.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), RefusingApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_api_down_is_one_line_and_a_failure(logs_dir: Path):
    base_url = f"http://127.0.0.1:{free_port()}"
    status, stderr = run_runner(runner_env(base_url, logs_dir), "--once", timeout=30)
    assert status == 1
    assert stderr.splitlines() == [
        f"agent_runner ERROR: cannot reach the API at {base_url}: Connection refused"
    ]


def test_a_refused_report_keeps_the_metric_and_names_the_task(refusing_api, logs_dir):
    env = runner_env(refusing_api, logs_dir, AGENT_API_TOKEN="s3cret")
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
    assert {r["authorization"] for r in RefusingApi.requests} == {"Bearer s3cret"}
