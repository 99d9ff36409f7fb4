from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner, FlaskClient

from app import create_app
from tests.support import FakeClock, GunicornServer


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting of the shell the tests run from (a token, a routing file...) leaks in."""
    for name in list(os.environ):
        if name.startswith("AGENT_") or name == "METRICS_WINDOW_DAYS":
            monkeypatch.delenv(name)


@pytest.fixture
def logs_dir(tmp_path: Path) -> Path:
    path = tmp_path / "logs"
    path.mkdir()
    return path


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(logs_dir: Path, clock: FakeClock) -> Flask:
    return create_app({"TESTING": True, "AGENT_LOGS_DIR": str(logs_dir), "CLOCK": clock,
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
