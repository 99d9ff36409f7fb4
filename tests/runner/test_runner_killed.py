"""A command never outlives its runner, nor its task: real gunicorn, real runners killed
with SIGKILL, and commands whose children leave their process group (``setsid``)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.servers import runner_env
from tests.runner.stand_in import StandIn, sent, serving, task
from tests.support import GunicornServer
from tests.support.runner import create_task, process_alive, run_runner, start_runner, wait_for

# The leader starts a child in its group and one in a session of its own, writes the three
# pids to the file named by the direction, and waits.
DETACHING = ["sh", "-c",
             'sleep 600 & a=$!; setsid sleep 600 & b=$!; echo "$$ $a $b" > "$1.tmp"'
             ' && mv "$1.tmp" "$1"; echo started; wait',
             "--", "{direction}"]
SLACK_SECONDS = 3.0


@pytest.fixture
def api(tmp_path: Path, logs_dir: Path) -> Iterator[str]:
    routing = tmp_path / "routing.json"
    routing.write_text(json.dumps({"test": {"model": "fake/detaching", "command": DETACHING}}))
    server = GunicornServer(logs_dir, env={"AGENT_ROUTING_FILE": str(routing),
                                           "AGENT_FSYNC": "0"}).start()
    yield server.base_url
    server.stop()


@pytest.fixture
def pid_file(tmp_path: Path) -> Iterator[Path]:
    """Where the command writes its pids; none outlives the test."""
    path = tmp_path / "pids"
    yield path
    for pid in path.read_text().split() if path.exists() else []:
        if process_alive(int(pid)):
            os.kill(int(pid), signal.SIGKILL)


@pytest.fixture
def runners() -> Iterator[list[subprocess.Popen[str]]]:
    """The runners a test starts; none outlives it."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for runner in started:
        if runner.poll() is None:
            runner.kill()
            runner.communicate(timeout=30)


def started_command(api: str, env: dict[str, str], pid_file: Path,
                    runners: list[subprocess.Popen[str]]) -> tuple[
                        subprocess.Popen[str], list[int]]:
    """A runner running a DETACHING command: the runner, and the command's pids."""
    create_task(api, str(pid_file), "test")
    runner = start_runner(env, "--lease-seconds", "30", "--interval", "0.2")
    runners.append(runner)
    wait_for(pid_file.exists, "the command to start", timeout=30)
    pids = [int(pid) for pid in pid_file.read_text().split()]
    assert all(process_alive(pid) for pid in pids)
    return runner, pids


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError):
            continue
        if parent == pid:
            found.append(int(stat.parent.name))
    return found


def command_line(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def test_a_runner_killed_with_sigkill_takes_its_command_along(api, logs_dir, pid_file,
                                                              runners):
    env = runner_env(api, logs_dir)
    runner, pids = started_command(api, env, pid_file, runners)
    runner.send_signal(signal.SIGKILL)
    _, stderr = runner.communicate(timeout=30)
    wait_for(lambda: not any(process_alive(pid) for pid in pids),
             "the command's processes to end", timeout=SLACK_SECONDS)
    assert f"its runner (pid {runner.pid}) is gone; stopped 3 process(es)" in stderr


def test_a_runner_started_on_the_folder_stops_what_a_killed_one_left(api, logs_dir, pid_file,
                                                                     runners):
    """Its watchdog killed too: the next runner of the folder stops the command."""
    env = runner_env(api, logs_dir)
    runner, pids = started_command(api, env, pid_file, runners)
    [watchdog] = [pid for pid in children(runner.pid)
                  if command_line(pid) == command_line(runner.pid)]
    os.kill(watchdog, signal.SIGKILL)
    runner.send_signal(signal.SIGKILL)
    runner.communicate(timeout=30)
    time.sleep(0.5)
    assert all(process_alive(pid) for pid in pids)

    status, stderr = run_runner(env, "--once")  # the task is held for 30 s: none to claim
    assert status == 0, stderr
    assert not any(process_alive(pid) for pid in pids)
    assert f"its runner (pid {runner.pid}) is gone; stopped 3 process(es)" in stderr


def test_what_leaves_the_group_ends_with_its_command(tmp_path: Path):
    """A child in a session of its own (``setsid``) is stopped with its command, and
    does not hold the output pipe open after it."""
    pid_file = tmp_path / "pid"
    command = f"sh -c 'setsid sleep 600 & echo $! > {pid_file}; echo started'"
    try:
        with serving(StandIn, task(1, command)) as base_url:
            started = time.monotonic()
            status, stderr = run_runner(runner_env(
                base_url, tmp_path, AGENT_RUNNER_DIR=str(tmp_path / "runner")), "--once")
            took = time.monotonic() - started
        assert status == 0, stderr
        assert not process_alive(int(pid_file.read_text()))
        assert took < SLACK_SECONDS
        [report] = sent(StandIn, "PATCH", "report")
        assert (report["status"], report["output"]) == ("completed", "started\n")
    finally:
        if pid_file.exists() and process_alive(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
