"""PostgreSQL only, under gunicorn: a database server that stops answering (every one of
its processes stopped with SIGSTOP) costs a request at most the configured timeouts and
answers 503 with the JSON error, and ``/api/health`` says ``degraded`` within a second,
also while other requests wait on the database."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from bench.postgres_server import PostgresServer
from tests.support import GunicornServer

pytestmark = pytest.mark.backend("postgresql")
TIMEOUTS = {"AGENT_DATABASE_STATEMENT_TIMEOUT": "1", "AGENT_DATABASE_LOCK_TIMEOUT": "1",
            "AGENT_DATABASE_POOL_TIMEOUT": "1", "AGENT_DATABASE_CONNECT_TIMEOUT": "2"}
THREADS = 8
REQUEST_BOUND_SECONDS = 3.5
"""The statement timeout, the margin before a silent connection is cut, and time to spare."""
HEALTH_BOUND_SECONDS = 0.8
"""Health waits 0.4 s for the database's answer, less than any timeout set here."""


def processes_of(postgres: PostgresServer) -> list[int]:
    postmaster = postgres.postmaster_pid()
    assert postmaster is not None
    children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(postmaster)],
                              capture_output=True, text=True).stdout.split()
    return [postmaster, *map(int, children)]


def signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            continue


@contextmanager
def stopped(postgres: PostgresServer) -> Iterator[None]:
    """Every process of the cluster stopped (the postmaster first, so that it forks no
    more backends), and always continued."""
    pids = processes_of(postgres)
    try:
        signal_all(pids, signal.SIGSTOP)
        yield
    finally:
        signal_all(pids, signal.SIGCONT)


@pytest.fixture
def gunicorn(backend, logs_dir: Path) -> Iterator[GunicornServer]:
    server = GunicornServer(logs_dir, workers=1,
                            env={**TIMEOUTS, "AGENT_THREADS": str(THREADS)}).start()
    yield server
    server.stop()


def timed(method: str, url: str, **kwargs) -> tuple[float, requests.Response]:
    started = time.monotonic()
    response = requests.request(method, url, timeout=10, **kwargs)
    return time.monotonic() - started, response


def create(base_url: str) -> tuple[float, requests.Response]:
    return timed("POST", f"{base_url}/api/agent/tasks",
                 json={"direction": "d", "task_type": "spec"})


def claim(base_url: str) -> tuple[float, requests.Response]:
    return timed("POST", f"{base_url}/api/agent/tasks/claim", json={"runner_id": "r1"})


def count(base_url: str) -> tuple[float, requests.Response]:
    return timed("GET", f"{base_url}/api/agent/tasks/count")


def health(base_url: str) -> tuple[float, requests.Response]:
    return timed("GET", f"{base_url}/api/health")


def assert_unavailable(answers: list[tuple[float, requests.Response]]) -> None:
    for seconds, response in answers:
        assert response.status_code == 503, (response.status_code, response.text)
        assert "unavailable" in response.json()["detail"]
        assert seconds < REQUEST_BOUND_SECONDS, (seconds, response.json())


def test_a_stopped_database_costs_a_request_the_timeouts_and_health_a_second(
        gunicorn: GunicornServer, postgres_server: PostgresServer) -> None:
    base = gunicorn.base_url
    assert create(base)[1].status_code == 201
    assert health(base)[1].json()["status"] == "ok"
    with stopped(postgres_server), ThreadPoolExecutor(THREADS) as pool:
        waiting = [pool.submit(call, base) for call in (create, claim, count) * 2]
        time.sleep(0.3)
        seconds, answer = health(base)
        assert answer.status_code == 200 and answer.json()["status"] == "degraded"
        assert seconds < HEALTH_BOUND_SECONDS, seconds
        assert_unavailable([each.result() for each in waiting])
        assert_unavailable([create(base), count(base)])
        seconds, answer = health(base)
        assert answer.json()["status"] == "degraded" and seconds < HEALTH_BOUND_SECONDS
    deadline = time.monotonic() + 10
    while health(base)[1].json()["status"] != "ok":
        assert time.monotonic() < deadline, "service did not resume"
        time.sleep(0.2)
    assert create(base)[1].status_code == 201


def test_health_answers_while_more_requests_wait_than_the_server_has_threads(
        gunicorn: GunicornServer, postgres_server: PostgresServer) -> None:
    """Sixty requests on eight threads: each answers 503 once the server is found
    silent, so threads come free and health is served soon."""
    base = gunicorn.base_url
    assert count(base)[1].status_code == 200
    with stopped(postgres_server), ThreadPoolExecutor(60) as pool:
        waiting = [pool.submit(count, base) for _ in range(60)]
        time.sleep(0.3)
        seconds, answer = health(base)
        assert answer.json()["status"] == "degraded"
        assert seconds < REQUEST_BOUND_SECONDS, seconds
        answers = [each.result() for each in waiting]
    assert {response.status_code for _, response in answers} == {503}
    assert max(seconds for seconds, _ in answers) < 2 * REQUEST_BOUND_SECONDS
