"""A direction never reaches the routed program as an option.

The built-in route runs ``claude``; here an argparse-based stand-in (tests/support/fake_agent.py)
is ``claude`` on PATH, so a direction parsed as an option shows: ``--output-file`` would
write its file. Real gunicorn, real runner, the built-in routing table.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from bench.servers import runner_env
from tests.support.runner import create_task, get_task, run_runner
from tests.support import GunicornServer

FAKE_AGENT = Path(__file__).parent.parent / "support" / "fake_agent.py"


@pytest.fixture
def claude_on_path(tmp_path: Path) -> str:
    """A folder holding ``claude``, the stand-in, to put first on PATH."""
    folder = tmp_path / "bin"
    folder.mkdir()
    claude = folder / "claude"
    claude.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_AGENT}" "$@"\n')
    claude.chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


def test_directions_that_look_like_options_are_one_literal_argument(
    logs_dir: Path, tmp_path: Path, claude_on_path: str
) -> None:
    written = tmp_path / "written-by-an-option"
    directions = [f"--output-file={written}", "--dangerously-skip-permissions", "-p", "--",
                  f"--model=evil --output-file {written}"]
    server = GunicornServer(logs_dir).start()
    try:
        tasks = [create_task(server.base_url, direction, "impl") for direction in directions]
        runs_file = tmp_path / "runs.jsonl"
        env = runner_env(server.base_url, logs_dir, PATH=claude_on_path,
                         FAKE_AGENT_RUNS=str(runs_file))
        status, stderr = run_runner(env, "--once")
        assert status == 0, stderr
        assert {get_task(server.base_url, task["id"])["status"] for task in tasks} == {
            "completed"}
    finally:
        server.stop()
    runs = [json.loads(line) for line in runs_file.read_text().splitlines()]
    assert sorted(run["options"]["direction"] for run in runs) == sorted(directions)
    for run in runs:
        assert run["options"]["output_file"] is None
        assert run["options"]["dangerously_skip_permissions"] is False
        assert run["options"]["model"] == "ollama/glm-4.7-flash:latest"
    assert not written.exists()
