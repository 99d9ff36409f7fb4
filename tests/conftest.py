from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner, FlaskClient

from bench.postgres_server import PostgresServer, postgres_bin_dir
from tests.support import FakeClock, GunicornServer, close_open_apps, open_app


@pytest.fixture(autouse=True)
def close_apps() -> Iterator[None]:
    """Apps made by the test (with ``open_app``) let go of their files and connections."""
    yield
    close_open_apps()


STAND_IN_PROGRAMS = ("sh", "true", sys.executable, "claude", "no-such-agent-cli")
"""The programs the tests route tasks to: ``sh`` (the example routing, scripted commands),
``true``, the Python running the tests (tests/support/fake_agent.py), ``claude`` (the
built-in route, with a stand-in on PATH) and a program that does not exist."""


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting of the shell the tests run from (a token, a routing file...) leaks in;
    every runner a test starts may run the stand-in programs."""
    for name in list(os.environ):
        if name.startswith("AGENT_") or name == "METRICS_WINDOW_DAYS":
            monkeypatch.delenv(name)
    monkeypatch.setenv("AGENT_ALLOW_PROGRAMS", ",".join(STAND_IN_PROGRAMS))


BACKENDS = ("jsonl", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "backend(*names): run the test against these store backends only (a test "
        "of one backend's own behaviour, such as its files on disk)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that uses the stores (through ``logs_dir``: the app, the client, the
    servers, the runners) runs once per backend, unless marked for some only."""
    if "backend" in metafunc.fixturenames:
        only = metafunc.definition.get_closest_marker("backend")
        metafunc.parametrize("backend", only.args if only else BACKENDS, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The store backend of this run of the test: with PostgreSQL, a fresh database named
    in AGENT_DATABASE_URL, which the app, gunicorn and the commands all read."""
    if request.param == "postgresql":
        monkeypatch.setenv("AGENT_DATABASE_URL", request.getfixturevalue("database_url"))
    return request.param


@pytest.fixture
def logs_dir(tmp_path: Path, backend: str) -> Path:
    path = tmp_path / "logs"
    path.mkdir()
    return path


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(logs_dir: Path, clock: FakeClock) -> Flask:
    """The app on this test's stores (its files and connections let go after the test)."""
    return open_app({"TESTING": True, "AGENT_LOGS_DIR": str(logs_dir), "CLOCK": clock,
                     "AGENT_FSYNC": False})


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


@pytest.fixture
def server(logs_dir: Path) -> Iterator[GunicornServer]:
    running = GunicornServer(logs_dir).start()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL for the whole session, in a cluster of its own on a free port."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.fail("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb, no "
                    "initdb on PATH); .ci/run installs Debian's postgresql package "
                    "(apt-get install postgresql)")
    with PostgresServer(bin_dir) as server:
        yield server


@pytest.fixture
def database_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a fresh, empty database, dropped after the test.

    The test's apps let go of their connections first (see ``open_app``)."""
    name = f"test_{uuid.uuid4().hex}"
    url = postgres_server.create_database(name)
    yield url
    close_open_apps()
    if not postgres_server.is_running():  # the test stopped or killed the shared server
        postgres_server.start()
    postgres_server.drop_database(name)
