"""``flask`` commands on a database they cannot use: one line on stderr, exit status 1,
no traceback."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from tests.support import ROOT, free_port

COMMANDS = [("metrics", "show"), ("tasks", "compact"), ("db", "upgrade")]


def run_command(args: tuple[str, ...], database_url: str,
                tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "AGENT_DATABASE_URL": database_url,
           "AGENT_LOGS_DIR": str(tmp_path)}
    return subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)


def assert_one_line(result: subprocess.CompletedProcess, *expected: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("Error: database postgresql://")
    for part in expected:
        assert part in line


@pytest.fixture(scope="module")
def wrong_password_url(postgres_server) -> Iterator[str]:
    """The URL of a database, with a role that exists but a password that is not its own."""
    name = f"cli_{uuid.uuid4().hex}"
    postgres_server.create_database(name)
    postgres_server.create_role(name, "right")
    yield postgres_server.url(name, user=name, password="wrong")
    postgres_server.drop_database(name)


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_a_password_the_database_refuses(wrong_password_url, tmp_path, args) -> None:
    result = run_command(args, wrong_password_url, tmp_path)
    assert_one_line(result, "password authentication failed")
    assert "wrong" not in result.stderr


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_a_database_that_refuses_connections(tmp_path, args) -> None:
    result = run_command(args, f"postgresql://nobody@127.0.0.1:{free_port()}/none", tmp_path)
    assert_one_line(result)
