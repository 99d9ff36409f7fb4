"""Settings and options the runner cannot use stop it at start: one line, exit status 2."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.runner import run_runner
from tests.support import free_port


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "AGENT_API_BASE": f"http://127.0.0.1:{free_port()}",
            "AGENT_RUNNER_DIR": str(tmp_path / "runner")}


@pytest.mark.parametrize("name,value,expected", [
    ("AGENT_TASK_LOG_MAX_BYTES", "10MB", "AGENT_TASK_LOG_MAX_BYTES must be a whole number"),
    ("AGENT_TASK_LOG_KEEP_DAYS", "0", "AGENT_TASK_LOG_KEEP_DAYS must be a whole number"),
    ("AGENT_TASK_TIMEOUT", "soon", "AGENT_TASK_TIMEOUT: expected a positive number"),
    ("AGENT_CANCEL_GRACE_SECONDS", "-5",
     "AGENT_CANCEL_GRACE_SECONDS: expected a positive number"),
    ("AGENT_API_BASE", "localhost:8000", "AGENT_API_BASE must be an http:// or https://"),
])
def test_a_bad_setting_is_one_line(env, name, value, expected):
    status, stderr = run_runner({**env, name: value}, "--once", timeout=30)
    assert status == 2
    [line] = stderr.splitlines()
    assert line.startswith(f"agent_runner: {expected}")
    assert not Path(env["AGENT_RUNNER_DIR"]).exists()


@pytest.mark.parametrize("inside", ["a-file", "a-file/below"])
def test_a_runner_folder_that_cannot_be_written_is_one_line(env, tmp_path, inside):
    (tmp_path / "a-file").write_text("not a folder")
    status, stderr = run_runner({**env, "AGENT_RUNNER_DIR": str(tmp_path / inside)}, "--once",
                                timeout=30)
    assert status == 2
    [line] = stderr.splitlines()
    assert line.startswith(f"agent_runner: AGENT_RUNNER_DIR: cannot write in {tmp_path}/")


@pytest.mark.parametrize("option", [("--lease-seconds", "4"), ("--lease-seconds", "3601"),
                                    ("--api", "ftp://example.com"), ("--workers", "0")])
def test_a_bad_option_is_status_2(env, option):
    status, stderr = run_runner(env, "--once", *option, timeout=30)
    assert status == 2
    assert "Traceback" not in stderr and f"argument {option[0]}" in stderr.splitlines()[-1]
