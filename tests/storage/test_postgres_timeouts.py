"""PostgreSQL only: a wait on a lock the database holds for another session ends at the
configured timeouts with a 503 and the JSON error, never later, never a 500."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.support import FakeClock, open_app

pytestmark = pytest.mark.backend("postgresql")
TIMEOUT_SECONDS = 1
BOUND_SECONDS = 2.5
"""How long a request may take when its wait is cut: the timeout, plus time to spare."""


@pytest.fixture
def short_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short lock and pool timeouts; the statement timeout, longer, is not what ends the
    waits."""
    monkeypatch.setenv("AGENT_DATABASE_LOCK_TIMEOUT", str(TIMEOUT_SECONDS))
    monkeypatch.setenv("AGENT_DATABASE_POOL_TIMEOUT", str(TIMEOUT_SECONDS))
    monkeypatch.setenv("AGENT_DATABASE_STATEMENT_TIMEOUT", "30")
    monkeypatch.setenv("AGENT_DATABASE_POOL_SIZE", "2")


def make_app(logs_dir: Path, clock: FakeClock) -> Flask:
    return open_app({"TESTING": True, "AGENT_LOGS_DIR": str(logs_dir), "CLOCK": clock,
                     "AGENT_FSYNC": False})


@contextmanager
def table_locked(database_url: str) -> Iterator[None]:
    """Another session holds ``tasks`` in ACCESS EXCLUSIVE mode (as a migration or a
    careless operator would): nobody may even read it."""
    with psycopg.connect(database_url) as conn:
        # A test that waits in vain fails after some seconds, not never.
        conn.execute("SET idle_in_transaction_session_timeout = '8s'")
        conn.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
        yield
        conn.rollback()


def timed(call) -> tuple[float, object]:
    started = time.monotonic()
    response = call()
    return time.monotonic() - started, response


def assert_unavailable(response) -> None:
    assert response.status_code == 503, (response.status_code, response.data)
    assert "unavailable" in response.json["detail"], response.json


def requests_of(client: FlaskClient) -> dict[str, object]:
    return {
        "create": lambda: client.post("/api/agent/tasks",
                                      json={"direction": "d", "task_type": "spec"}),
        "claim": lambda: client.post("/api/agent/tasks/claim", json={"runner_id": "r1"}),
        "count": lambda: client.get("/api/agent/tasks/count"),
    }


def test_a_locked_table_answers_503_at_the_lock_timeout(
        backend, database_url, short_timeouts, logs_dir, clock) -> None:
    client = make_app(logs_dir, clock).test_client()
    assert client.post("/api/agent/tasks",
                       json={"direction": "d", "task_type": "spec"}).status_code == 201
    with table_locked(database_url):
        for name, call in requests_of(client).items():
            seconds, response = timed(call)
            assert_unavailable(response)
            assert "lock timeout" in response.json["detail"], name
            assert seconds < BOUND_SECONDS, (name, seconds)
        health = client.get("/api/health")
        assert health.status_code == 200 and health.json["status"] == "ok"
    assert client.get("/api/agent/tasks/count").status_code == 200
    assert client.post("/api/agent/tasks/claim", json={"runner_id": "r1"}).status_code == 200


def test_more_waiters_than_connections_all_answer_503_in_time(
        backend, database_url, short_timeouts, logs_dir, clock) -> None:
    """Six requests, two pooled connections: those that wait for a connection end at the
    pool timeout, the others at the lock timeout."""
    app = make_app(logs_dir, clock)
    app.test_client().get("/api/agent/tasks/count")
    answers: list[tuple[float, int]] = []

    def count() -> None:
        seconds, response = timed(lambda: app.test_client().get("/api/agent/tasks/count"))
        answers.append((seconds, response.status_code))

    with table_locked(database_url):
        threads = [threading.Thread(target=count) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
    assert [status for _, status in answers] == [503] * 6
    assert max(seconds for seconds, _ in answers) < BOUND_SECONDS, answers


def test_closing_the_app_closes_the_health_probe_connection(
        logs_dir: Path, clock: FakeClock, database_url: str) -> None:
    app = make_app(logs_dir, clock)
    assert app.test_client().get("/api/health").json["status"] == "ok"
    name = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]

    def sessions() -> int:
        with psycopg.connect(database_url) as conn:
            return conn.execute("SELECT count(*) - 1 FROM pg_stat_activity WHERE datname = %s",
                                (name,)).fetchone()[0]

    assert sessions() >= 1
    app.extensions["agent"].tasks.store.database.close()
    deadline = time.monotonic() + 5
    while sessions() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sessions() == 0
