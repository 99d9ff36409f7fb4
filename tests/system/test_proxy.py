"""The shipped nginx configuration (scripts/nginx/) in front of a real gunicorn: the
service's own rules still hold through it, exports arrive whole, bodies over the limit
are answered 413 in JSON by nginx, and slow clients are held by nginx, not gunicorn."""
from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.support.proxy import SERVER_NAME, NginxProxy, nginx_binary
from tests.support.slow_clients import (
    EXPORT_PATH, assert_quick, held_open, hold, probe, read_export, slow_export_reader,
    tick_until, trickled_body, trickled_header, write_bulk_store,
)
from tests.support import GunicornServer, free_port

RECORDS = 300_000
TOKEN = secrets.token_urlsafe(24)  # 32 characters
HOST = {"Host": SERVER_NAME}
AUTH = {**HOST, "Authorization": f"Bearer {TOKEN}"}
WORKER_TIMEOUT_SECONDS = 5
THREADS = 4
"""Fewer gunicorn threads than the slow clients below: they only pass if nginx holds them."""
SLOW_OF_EACH_KIND = 4
"""As many slow export readers as the shipped config lets one address export at once
(its ``limit_conn`` on the export location), so a further export is refused."""
HOLD_SECONDS = 10
SPOOL_SECONDS = 90
"""How long gunicorn may take to hand the slow readers' exports to nginx."""
ONE_MIB = 1024 * 1024
TASK = b'{"direction": "x", "task_type": "spec"}'
JSON_HEADERS = {**AUTH, "Content-Type": "application/json"}


@dataclass(frozen=True)
class Stack:
    gunicorn: GunicornServer
    nginx: NginxProxy

    def url(self, path: str) -> str:
        return self.nginx.base_url + path

    def gunicorn_logged(self, text: str) -> int:
        """How many of gunicorn's access log lines hold ``text``."""
        return sum(text in line for line in self.gunicorn.log_path.read_text().splitlines())


@pytest.fixture(scope="module")
def nginx_path() -> str:
    return nginx_binary()


@pytest.fixture(scope="module")
def stack(nginx_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs_dir = tmp_path_factory.mktemp("logs")
    write_bulk_store(logs_dir / "metrics.jsonl", RECORDS)
    env = {"AGENT_API_TOKEN": TOKEN, "AGENT_ALLOWED_HOSTS": SERVER_NAME, "AGENT_FSYNC": "0",
           "AGENT_THREADS": str(THREADS),
           "GUNICORN_CMD_ARGS": f"--timeout {WORKER_TIMEOUT_SECONDS}"}
    with pytest.MonkeyPatch.context() as patch:  # no AGENT_* setting of the shell leaks in
        for name in list(os.environ):
            if name.startswith("AGENT_"):
                patch.delenv(name)
        gunicorn = GunicornServer(logs_dir, workers=1, env=env)
    gunicorn.start()
    try:
        nginx = NginxProxy(nginx_path, tmp_path_factory.mktemp("nginx"),
                           f"127.0.0.1:{gunicorn.port}").start()
        try:
            yield Stack(gunicorn, nginx)
        finally:
            nginx.stop()
    finally:
        gunicorn.stop()


def assert_json_error(response: requests.Response, status: int) -> None:
    assert response.status_code == status, response.text[:300]
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["detail"]


def test_the_token_is_required_through_the_proxy(stack: Stack) -> None:
    tasks = stack.url("/api/agent/tasks")
    assert_json_error(requests.get(tasks, headers=HOST, timeout=10), 401)
    wrong = requests.get(tasks, headers={**HOST, "Authorization": "Bearer " + "w" * 32},
                         timeout=10)
    assert_json_error(wrong, 401)
    assert wrong.headers["WWW-Authenticate"] == "Bearer"
    assert requests.get(tasks, headers=AUTH, timeout=10).status_code == 200
    assert requests.get(stack.url("/api/health"), headers=HOST, timeout=10).status_code == 200


def test_the_service_rules_on_bodies_and_hosts_hold_through_the_proxy(stack: Stack) -> None:
    text = requests.post(stack.url("/api/agent/tasks"), data=TASK, timeout=10,
                         headers={**AUTH, "Content-Type": "text/plain"})
    assert_json_error(text, 415)
    stranger = requests.get(stack.url("/api/agent/tasks"), timeout=10,
                            headers={**AUTH, "Host": "rebound.example.net"})
    assert_json_error(stranger, 400)
    assert "rebound.example.net" in stranger.json()["detail"]


@pytest.mark.parametrize("seconds", [0, 2 * WORKER_TIMEOUT_SECONDS],
                         ids=["at-full-speed", "slower-than-the-worker-timeout"])
def test_a_large_export_arrives_whole(stack: Stack, seconds: float) -> None:
    read = read_export(stack.url(EXPORT_PATH), AUTH, expected_lines=RECORDS, seconds=seconds)
    assert (read.lines, read.error) == (RECORDS, ""), read.error
    assert read.ends_with_newline
    assert json.loads(read.last_line)["task_id"] == f"bulk-{RECORDS - 1}"
    assert read.seconds >= seconds


def chunks(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    """``body`` as a generator, which requests sends chunked, without a Content-Length."""
    for start in range(0, len(body), size):
        yield body[start:start + size]


def test_bodies_over_the_limit_are_413_json_from_nginx(stack: Stack) -> None:
    url = stack.url("/api/agent/tasks")
    posts_seen = stack.gunicorn_logged('"POST /api/agent/tasks ')
    big = json.dumps({"direction": "x" * 2 * ONE_MIB, "task_type": "spec"}).encode()
    just_over = TASK.ljust(ONE_MIB + 1)  # JSON may end in whitespace
    for body in (big, just_over):
        assert_json_error(requests.post(url, data=body, headers=JSON_HEADERS, timeout=30), 413)
        assert_json_error(
            requests.post(url, data=chunks(body), headers=JSON_HEADERS, timeout=30), 413)
    assert stack.gunicorn_logged('"POST /api/agent/tasks ') == posts_seen, \
        "nginx should answer these itself, without passing them on"

    at_limit = TASK.ljust(ONE_MIB)
    for data in (at_limit, chunks(at_limit), TASK):
        response = requests.post(url, data=data, headers=JSON_HEADERS, timeout=30)
        assert response.status_code == 201, response.text[:300]
        assert response.json()["direction"] == "x"


def test_nginx_answers_json_when_gunicorn_is_not_there(nginx_path: str, tmp_path: Path) -> None:
    nginx = NginxProxy(nginx_path, tmp_path, f"127.0.0.1:{free_port()}").start()
    try:
        response = requests.get(f"{nginx.base_url}/api/agent/tasks", headers=AUTH, timeout=10)
    finally:
        nginx.stop()
    assert_json_error(response, 502)


def test_slow_clients_are_held_by_nginx_not_gunicorn(stack: Stack) -> None:
    kinds = [trickled_header, trickled_body, slow_export_reader] * SLOW_OF_EACH_KIND
    exports = '"GET /api/agent/metrics/records'
    exports_before = stack.gunicorn_logged(exports)
    token = {"Authorization": AUTH["Authorization"]}
    with held_open(kinds, stack.nginx.port, SERVER_NAME, token) as clients:
        by_kind = {kind: [c for k, c in zip(kinds, clients) if k is kind] for kind in kinds}
        # nginx takes each export from gunicorn into a temporary file at full speed, so
        # gunicorn is done with them while the clients have read a few KiB (at most
        # READ_PER_TICK a tick). Four exports of 48 MB from one worker take about 27 s on a
        # 2-core machine with nothing else running; the wait leaves room for a busy one.
        spooled = tick_until(
            clients, lambda: stack.gunicorn_logged(exports) >= exports_before + SLOW_OF_EACH_KIND,
            seconds=SPOOL_SECONDS)
        with requests.get(stack.url(EXPORT_PATH), headers=AUTH, stream=True,
                          timeout=10) as one_more:
            assert_json_error(one_more, 429)
        probes = hold(clients, HOLD_SECONDS, lambda: probe(stack.url("/api/health"), HOST))
        headers_cut = tick_until(
            clients, lambda: all(c.closed_by_server for c in by_kind[trickled_header]), seconds=5)
    assert spooled, ("gunicorn did not finish the slow readers' exports: nginx did not take "
                     "them, or slow clients held every gunicorn thread")
    assert_quick(probes, HOLD_SECONDS)
    assert headers_cut, "nginx should close a header slower than its client_header_timeout"
    assert not any(c.closed_by_server for c in by_kind[trickled_body] + by_kind[slow_export_reader])
    for reader in by_kind[slow_export_reader]:
        assert reader.answer_start.startswith(b"HTTP/1.1 200 ")
        assert reader.received < ONE_MIB
