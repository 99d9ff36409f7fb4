"""A stand-in for the task API, for the runner's tests: a small HTTP server in the test
that plays the service, notes every request it gets, and that subclasses make misbehave."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


def task(number: int, command: str = "sh -c 'echo hello from the task'") -> dict[str, Any]:
    return {"id": f"{number:032x}", "direction": "say hello", "task_type": "impl",
            "status": "pending", "model": "fake/model", "command": command, "context": {},
            "output": None, "runner_id": None, "decision": None}


class StandIn(BaseHTTPRequestHandler):
    """A service holding ``tasks``: claims take them in order, and a claim repeated by
    the runner holding a task gets that task back. Notes every request it gets."""

    tasks: dict[str, dict[str, Any]] = {}
    requests: list[dict[str, Any]] = []
    guard = threading.Lock()

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, status: int, body: dict[str, Any] | None = None) -> None:
        payload = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _note(self, body: dict[str, Any] | None = None) -> None:
        self.requests.append({"method": self.command, "path": urlsplit(self.path).path,
                              "body": body, "authorization": self.headers.get("Authorization"),
                              "at": time.monotonic()})

    def _body(self) -> dict[str, Any]:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self._note(body)
        return body

    def do_GET(self) -> None:
        self._note()
        path = urlsplit(self.path).path
        if path == "/api/agent/tasks":
            self._answer(200, {"tasks": [], "total": 0})
        elif path.rsplit("/", 1)[1] in self.tasks:
            self._answer(200, self.tasks[path.rsplit("/", 1)[1]])
        else:
            self._answer(404, {"detail": "no such task"})

    def do_POST(self) -> None:
        body = self._body()
        with self.guard:
            self._answer(*self.claim(body["runner_id"]))

    def do_PATCH(self) -> None:
        body = self._body()
        with self.guard:
            self._answer(*self.patch(self.tasks[self.path.rsplit("/", 1)[1]], body))

    def claim(self, runner_id: str) -> tuple[int, dict[str, Any] | None]:
        held = [each for each in self.tasks.values()
                if each["status"] == "running" and each["runner_id"] == runner_id]
        pending = [each for each in self.tasks.values() if each["status"] == "pending"]
        if not held and not pending:
            return 204, None
        claimed = held[0] if held else pending[0]
        claimed.update(status="running", runner_id=runner_id)
        return 200, claimed

    def patch(self, task: dict[str, Any], body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if task["runner_id"] != body["runner_id"]:
            return 409, {"detail": "held by another runner"}
        task.update({name: body[name] for name in ("status", "output") if name in body})
        return 200, task


@contextmanager
def serving(handler: type[StandIn], *tasks: dict[str, Any]) -> Iterator[str]:
    handler.tasks = {each["id"]: dict(each) for each in tasks}
    handler.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def sent(handler: type[StandIn], method: str, kind: str | None = None) -> list[dict[str, Any]]:
    """Bodies of the requests of one method; for PATCH, ``report``s (with a status) or
    ``heartbeat``s (without)."""
    return [r["body"] for r in handler.requests if r["method"] == method
            and (kind is None or ("status" in r["body"]) == (kind == "report"))]


class BrokenReports(StandIn):
    """Reports are answered 500: the store behind the service is broken."""

    def patch(self, task: dict[str, Any], body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if "status" in body:
            return 500, {"detail": "cannot write the task store"}
        return super().patch(task, body)
