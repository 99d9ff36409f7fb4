"""Cross-site requests and DNS rebinding, against a real gunicorn (gunicorn.conf.py).

A web page can make a browser send a "simple" request (``text/plain``, no preflight) to
the service, and a rebinding domain can make it look same-origin. Neither must queue a
task: bodies must be typed as JSON, and the Host must be one the service is told about.
"""
from __future__ import annotations

import socket

import pytest
import requests

from tests.support import GunicornServer

TASK = b'{"direction": "touch /tmp/pwned", "task_type": "spec"}'


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    running = GunicornServer(tmp_path_factory.mktemp("logs"), env={"AGENT_FSYNC": "0"}).start()
    yield running
    running.stop()


def total_tasks(server: GunicornServer) -> int:
    return requests.get(f"{server.base_url}/api/agent/tasks", timeout=30).json()["total"]


@pytest.mark.parametrize("content_type", [
    "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x", None, "application/jsonp", "application/json-seq",
])
def test_a_body_not_typed_as_json_is_415_and_creates_nothing(server, content_type) -> None:
    before = total_tasks(server)
    headers = {"Content-Type": content_type} if content_type else {}
    for method, path in (("POST", "/api/agent/tasks"), ("PATCH", "/api/agent/tasks/x")):
        response = requests.request(method, server.base_url + path, data=TASK,
                                    headers=headers, timeout=30)
        assert response.status_code == 415, (method, content_type, response.text)
        assert "application/json" in response.json()["detail"]
    assert total_tasks(server) == before


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "Application/JSON;charset=UTF-8"])
def test_json_with_parameters_is_accepted(server, content_type) -> None:
    response = requests.post(f"{server.base_url}/api/agent/tasks", data=TASK,
                             headers={"Content-Type": content_type}, timeout=30)
    assert response.status_code == 201, response.text


def test_the_service_sends_no_cors_headers(server) -> None:
    preflight = requests.options(f"{server.base_url}/api/agent/tasks", timeout=30, headers={
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    simple = requests.post(f"{server.base_url}/api/agent/tasks", data=TASK, timeout=30,
                           headers={"Origin": "http://evil.example",
                                    "Content-Type": "application/json"})
    for response in (preflight, simple):
        assert not [name for name in response.headers if name.lower().startswith("access-control")]


def raw_host_request(port: int, host: str | None) -> bytes:
    head = "GET /api/agent/tasks HTTP/1.1\r\n" + (f"Host: {host}\r\n" if host else "")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"{head}Connection: close\r\n\r\n".encode())
        return b"".join(iter(lambda: sock.recv(65536), b""))


@pytest.mark.parametrize("host", ["localhost", "localhost:8000", "127.0.0.1:1234", "[::1]:80",
                                  "LOCALHOST"])
def test_default_hosts_are_served(server, host) -> None:
    assert raw_host_request(server.port, host).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize("host", ["rebind.attacker.example", "rebind.attacker.example:8000",
                                  "localhost.attacker.example", "127.0.0.2", "[::2]:80"])
def test_another_host_is_400_json(server, host) -> None:
    answer = raw_host_request(server.port, host)
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"application/json" in answer and b"AGENT_ALLOWED_HOSTS" in answer


def test_allowed_hosts_setting(tmp_path) -> None:
    named = GunicornServer(tmp_path, env={"AGENT_ALLOWED_HOSTS": "agent.example.com, 127.0.0.1"})
    anyone = GunicornServer(tmp_path, env={"AGENT_ALLOWED_HOSTS": "*"})
    try:
        named.start()
        assert raw_host_request(named.port, "agent.example.com:443").startswith(b"HTTP/1.1 200")
        assert raw_host_request(named.port, "localhost").startswith(b"HTTP/1.1 400")
        anyone.start()
        assert raw_host_request(anyone.port, "whatever.example").startswith(b"HTTP/1.1 200")
    finally:
        named.stop()
        anyone.stop()
