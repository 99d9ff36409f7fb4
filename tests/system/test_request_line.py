"""Requests gunicorn itself refuses, and task ids no task can have, against a real
gunicorn (gunicorn.conf.py): every answer is the API's JSON error, never an HTML page."""
from __future__ import annotations

import http.client
import json

import pytest

from tests.support import GunicornServer

TASKS = "/api/agent/tasks"


def ask(server: GunicornServer, path: str, **headers: str) -> tuple[int, str, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return (response.status, response.getheader("Content-Type", ""),
                json.loads(response.read()))
    finally:
        connection.close()


@pytest.mark.parametrize("task_id", ["a" * 5000, "ab%00cd"])
def test_a_task_id_no_task_can_have_is_a_json_422(server, task_id) -> None:
    status, content_type, body = ask(server, f"{TASKS}/{task_id}")
    assert (status, content_type) == (422, "application/json")
    assert list(body["errors"]) == ["task_id"]


def test_a_request_line_beyond_gunicorns_limit_is_a_json_400(server) -> None:
    status, content_type, body = ask(server, f"{TASKS}/{'a' * 9000}")
    assert (status, content_type) == (400, "application/json")
    assert body["detail"].startswith("Request Line is too large")


def test_headers_beyond_gunicorns_limit_are_a_json_431(server) -> None:
    status, content_type, body = ask(server, TASKS, **{"X-Padding": "a" * 9000})
    assert (status, content_type) == (431, "application/json")
    assert "detail" in body
