"""Oversized and malformed input: a JSON 4xx, never a 500, and the server keeps serving."""
from __future__ import annotations

import socket

import pytest
import requests

from app.models.agent import MAX_CONTEXT_BYTES, MAX_DIRECTION_CHARS, MAX_OUTPUT_CHARS

ONE_MIB = 1024 * 1024


def create(client, **fields):
    return client.post("/api/agent/tasks", json={"direction": "d", "task_type": "impl", **fields})


def test_field_caps(client) -> None:
    assert create(client, direction="x" * MAX_DIRECTION_CHARS).status_code == 201
    too_long = create(client, direction="x" * (MAX_DIRECTION_CHARS + 1))
    assert too_long.status_code == 422 and "direction" in too_long.json["errors"]

    fits = {"notes": "x" * (MAX_CONTEXT_BYTES - 20)}
    assert create(client, context=fits).status_code == 201
    too_big = create(client, context={"notes": "x" * MAX_CONTEXT_BYTES})
    assert too_big.status_code == 422 and "context" in too_big.json["errors"]

    task_id = create(client).json["id"]
    too_much = client.patch(f"/api/agent/tasks/{task_id}",
                            json={"status": "completed", "output": "x" * (MAX_OUTPUT_CHARS + 1)})
    assert too_much.status_code == 422 and "output" in too_much.json["errors"]
    assert client.get(f"/api/agent/tasks/{task_id}").json["status"] == "pending"
    done = client.patch(f"/api/agent/tasks/{task_id}",
                        json={"status": "completed", "output": "x" * MAX_OUTPUT_CHARS})
    assert done.status_code == 200


@pytest.mark.parametrize("body", [
    b'{"direction": NaN, "task_type": "impl"}',
    b'{"direction": "\\ud800", "task_type": "impl"}',
    b'{"direction": "d", "task_type": "impl", "context": {"n": 1e400}}',
    b'\xff\xfe',
])
def test_json_the_stores_could_not_write_back_is_rejected(client, body: bytes) -> None:
    response = client.post("/api/agent/tasks", data=body, content_type="application/json")
    assert response.status_code == 400 and response.json["detail"]


def test_durations_beyond_the_cap_are_rejected(client) -> None:
    task_id = create(client).json["id"]
    response = client.patch(f"/api/agent/tasks/{task_id}",
                            json={"status": "completed", "duration_seconds": 1e300})
    assert response.status_code == 422 and "duration_seconds" in response.json["errors"]


def test_oversized_body_is_413_in_process(client) -> None:
    response = create(client, direction="x" * ONE_MIB)
    assert response.status_code == 413 and response.json["detail"]
    assert create(client).status_code == 201


def raw_request(port: int, head: bytes, body_chunks: list[bytes]) -> bytes:
    """Send a hand-made HTTP/1.1 request and return the whole response.

    A server that answers before reading the whole body closes with unread bytes, and
    the kernel may then reset the connection before the answer is read; that attempt is
    made again (the answer, not the connection, is what is tested)."""
    for _ in range(5):
        received = b""
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            sock.sendall(head)
            try:
                for chunk in body_chunks:
                    sock.sendall(chunk)
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the server may answer and close before reading it all
            try:
                while data := sock.recv(65536):
                    received += data
            except ConnectionResetError:
                pass
        if received:
            return received
    raise AssertionError("every attempt was reset before an answer arrived")


def test_oversized_bodies_are_413_under_gunicorn(server) -> None:
    url = f"{server.base_url}/api/agent/tasks"
    big = b'{"direction": "' + b"x" * (2 * ONE_MIB) + b'", "task_type": "impl"}'

    declared = requests.post(url, data=big, headers={"Content-Type": "application/json"},
                             timeout=60)
    assert declared.status_code == 413 and declared.json()["detail"]

    chunked = requests.post(url, data=iter([big[i:i + 65536] for i in range(0, len(big), 65536)]),
                            headers={"Content-Type": "application/json"}, timeout=60)
    assert chunked.request.headers.get("Transfer-Encoding") == "chunked"
    assert chunked.status_code == 413 and chunked.json()["detail"]

    head = ("POST /api/agent/tasks HTTP/1.1\r\nHost: localhost\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(big)}\r\nConnection: close\r\n\r\n").encode()
    lying = raw_request(server.port, head, [big[:1000]])
    assert lying.startswith(b"HTTP/1.1 413"), lying[:200]

    for _ in range(3):
        fine = requests.post(url, json={"direction": "d", "task_type": "impl"}, timeout=60)
        assert fine.status_code == 201
    near_limit = b'{"task_type": "impl", "direction": "' + b"x" * (ONE_MIB - 100) + b'"}'
    chunked_fine = requests.post(url, data=iter([near_limit[:ONE_MIB // 2],
                                                 near_limit[ONE_MIB // 2:]]),
                                 headers={"Content-Type": "application/json"}, timeout=60)
    assert chunked_fine.status_code == 422  # under the body limit, over the direction cap
    assert "direction" in chunked_fine.json()["errors"]
    listed = requests.get(url, timeout=60).json()
    assert listed["total"] == 3
