"""The runner end to end: real gunicorn, real runner processes, real commands."""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.runner import api as runner_api
from app.runner.api import TaskApi
from app.runner.worker import Runner
from tests.runner_support import (
    WAIT_SECONDS,
    create_task,
    get_task,
    metric_records,
    process_alive,
    run_runner,
    runner_env,
    start_runner,
    wait_for,
)
from tests.support import GunicornServer

FAKE_AGENT = Path(__file__).with_name("fake_agent.py")
# Starts a child that ignores SIGTERM, writes its pid to the file named by the direction,
# says so, then waits for it: only killing the whole group with SIGKILL ends both.
STUBBORN = ["sh", "-c",
            '(trap "" TERM; exec sleep 600) & echo $! > "$1.tmp" && mv "$1.tmp" "$1"'
            ' && echo "child $! started"; wait',
            "--", "{direction}"]
FAKE_COMMAND = [sys.executable, str(FAKE_AGENT), "--model", "{model}", "--", "{direction}"]
ROUTING = {
    "spec": {"model": "fake/spec", "command": FAKE_COMMAND},
    "review": {"model": "fake/review", "command": FAKE_COMMAND},
    "test": {"model": "fake/stubborn", "command": STUBBORN},
    "impl": {"model": "fake/missing", "command": ["no-such-agent-cli", "--", "{direction}"]},
}


@pytest.fixture
def api(tmp_path: Path, logs_dir: Path) -> Iterator[str]:
    routing = tmp_path / "routing.json"
    routing.write_text(json.dumps(ROUTING))
    server = GunicornServer(logs_dir, env={"AGENT_ROUTING_FILE": str(routing)}).start()
    yield server.base_url
    server.stop()


@pytest.fixture
def env(api: str, logs_dir: Path, tmp_path: Path) -> dict[str, str]:
    workdir = tmp_path / "work"
    workdir.mkdir()
    return runner_env(api, logs_dir, FAKE_AGENT_RUNS=str(tmp_path / "runs.jsonl"),
                      AGENT_WORKDIR=str(workdir))


@pytest.fixture
def pid_file(tmp_path: Path) -> Iterator[Path]:
    """Where the stubborn program writes its child's pid; the child never outlives the test."""
    path = tmp_path / "child.pid"
    yield path
    if path.exists() and process_alive(int(path.read_text())):
        os.kill(int(path.read_text()), signal.SIGKILL)


def runs(env: dict[str, str]) -> list[dict]:
    path = Path(env["FAKE_AGENT_RUNS"])
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_two_runners_run_each_task_exactly_once(api, env, logs_dir):
    tasks = {}
    for number in range(20):
        direction = f"task-{number} sleep=0.2" + (" exit=3" if number % 4 == 0 else "")
        task = create_task(api, direction, "spec" if number % 2 else "review")
        tasks[task["id"]] = task
    runners = [start_runner(env, "--once", "--workers", "2") for _ in range(2)]
    for runner in runners:
        _, stderr = runner.communicate(timeout=300)
        assert runner.returncode == 0, stderr
        assert "WARNING" not in stderr and "ERROR" not in stderr, stderr

    directions = Counter(run["options"]["direction"] for run in runs(env))
    assert directions == Counter(task["direction"] for task in tasks.values())
    assert {run["cwd"] for run in runs(env)} == {env["AGENT_WORKDIR"]}

    records = metric_records(logs_dir)
    assert Counter(record["task_id"] for record in records) == Counter(list(tasks))
    by_id = {record["task_id"]: record for record in records}
    for task_id, created in tasks.items():
        task = get_task(api, task_id)
        expected = "failed" if "exit=3" in created["direction"] else "completed"
        assert task["status"] == by_id[task_id]["status"] == expected
        assert task["model"] == by_id[task_id]["model"] == created["model"]
        assert f"working on: {created['direction']}\na note on stderr\n" in task["output"]
        assert ("[exit status 3]" in task["output"]) == (expected == "failed")
        assert task["duration_seconds"] == by_id[task_id]["duration_seconds"]
        assert 0.2 <= task["duration_seconds"] < 120
        log_file = logs_dir / f"task_{task_id}.log"
        assert log_file.read_text() == task["output"]
    runner_log = (logs_dir / "agent_runner.log").read_text()
    assert runner_log.count(" finished ") == 20


def test_timeout_kills_the_whole_process_group(api, env, logs_dir, pid_file):
    task = create_task(api, str(pid_file), "test")
    status, stderr = run_runner(env, "--once", "--timeout", "1")
    assert status == 0, stderr
    child = int(pid_file.read_text())
    assert not process_alive(child)
    reported = get_task(api, task["id"])
    assert reported["status"] == "failed"
    assert reported["output"] == f"child {child} started\n[timeout after 1 s]\n"
    assert reported["duration_seconds"] >= 1
    assert [r["status"] for r in metric_records(logs_dir)] == ["failed"]


def test_a_command_that_cannot_start_fails(api, env, logs_dir):
    task = create_task(api, "anything", "impl")
    status, stderr = run_runner(env, "--once")
    assert status == 0, stderr
    reported = get_task(api, task["id"])
    assert reported["status"] == "failed"
    assert "cannot start no-such-agent-cli: No such file or directory" in reported["output"]
    assert f"finished {task['id']} impl fake/missing failed" in stderr
    [record] = metric_records(logs_dir)
    assert record["task_id"] == task["id"] and record["status"] == "failed"


def test_a_log_that_cannot_be_written_fails_the_task(api, env, logs_dir):
    task = create_task(api, "anything", "spec")
    (logs_dir / f"task_{task['id']}.log").mkdir()
    status, stderr = run_runner(env, "--once")
    assert status == 0, stderr
    reported = get_task(api, task["id"])
    assert reported["status"] == "failed"
    assert reported["output"].startswith(f"[cannot open {logs_dir}/task_{task['id']}.log: ")
    assert runs(env) == []


def test_a_direction_reaches_the_program_as_one_literal_argument(api, env, tmp_path):
    marker = tmp_path / "marker"
    direction = (f"it's \"quoted\"; touch {marker} && echo `touch {marker}`\n"
                 f"$(touch {marker}) ${{HOME}} 'second line' *")
    task = create_task(api, direction, "review")
    status, stderr = run_runner(env, "--once")
    assert status == 0, stderr
    assert [run["argv"] for run in runs(env)] == [["--model", "fake/review", "--", direction]]
    assert not marker.exists()
    assert get_task(api, task["id"])["status"] == "completed"


def test_output_reported_is_the_last_64_kib(api, env, logs_dir):
    task = create_task(api, "print=20000", "spec")
    status, stderr = run_runner(env, "--once")
    assert status == 0, stderr
    output = get_task(api, task["id"])["output"]
    assert len(output.encode()) <= 64 * 1024
    assert output.endswith("line 19998\nline 19999\n")
    assert (logs_dir / f"task_{task['id']}.log").read_text().endswith(output)
    assert (logs_dir / f"task_{task['id']}.log").stat().st_size > 64 * 1024


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_interrupts_running_tasks(api, env, logs_dir, pid_file, signum):
    task = create_task(api, str(pid_file), "test")
    runner = start_runner(env, "--once")
    log_file = logs_dir / f"task_{task['id']}.log"
    # The output reaches the log while the command runs.
    wait_for(lambda: log_file.exists() and "started" in log_file.read_text(), "output")
    child = int(pid_file.read_text())
    runner.send_signal(signum)
    _, stderr = runner.communicate(timeout=120)
    assert runner.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr
    assert not process_alive(child)
    reported = get_task(api, task["id"])
    assert reported["status"] == "failed"
    assert reported["output"] == f"child {child} started\n[interrupted: the runner was stopped]\n"
    [record] = metric_records(logs_dir)
    assert record["status"] == "failed"
    assert record["duration_seconds"] == reported["duration_seconds"]


def test_without_once_it_keeps_polling(api, env):
    runner = start_runner(env, "--interval", "0.2")
    try:
        first = create_task(api, "first", "spec")
        wait_for(lambda: get_task(api, first["id"])["status"] == "completed", "the first task")
        second = create_task(api, "second exit=1", "spec")
        wait_for(lambda: get_task(api, second["id"])["status"] == "failed", "the second task")
    finally:
        runner.terminate()
        _, stderr = runner.communicate(timeout=120)
    assert runner.returncode == 128 + signal.SIGTERM, stderr
    assert [run["options"]["direction"] for run in runs(env)] == ["first", "second exit=1"]


class ArrivingTasks(TaskApi):
    """The API as a runner sees it while ``per_listing`` new tasks arrive with each listing;
    ``enough`` says when to stop the runner (checked at each listing)."""

    def __init__(
        self, base_url: str, per_listing: int,
        enough: Callable[[], bool] = lambda: False,
    ) -> None:
        super().__init__(base_url)
        self.runner: Runner | None = None
        self.per_listing = per_listing
        self.enough = enough
        self.arrived: list[dict] = []
        self.give_up = time.monotonic() + WAIT_SECONDS

    def pending_tasks(self) -> list[dict]:
        page = super().pending_tasks()
        for _ in range(self.per_listing):
            self.arrived.append(create_task(self.base_url, f"new-{len(self.arrived)}", "spec"))
        if self.enough() or time.monotonic() > self.give_up:
            self.runner.stop.set()
        return page


def runner_in_process(api: ArrivingTasks, env: dict[str, str], monkeypatch) -> Runner:
    """A runner in this process, listing pages of three tasks, one task at a time."""
    monkeypatch.setattr(runner_api, "PENDING_PAGE", 3)
    monkeypatch.setenv("FAKE_AGENT_RUNS", env["FAKE_AGENT_RUNS"])
    api.runner = Runner(api, logs_dir=Path(env["AGENT_LOGS_DIR"]),
                        workdir=Path(env["AGENT_WORKDIR"]), timeout=WAIT_SECONDS, workers=1)
    return api.runner


def test_once_runs_every_task_pending_at_start_page_by_page(api, env, monkeypatch):
    pending = [create_task(api, f"old-{number}", "spec") for number in range(8)]
    arriving = ArrivingTasks(api, per_listing=1)
    runner = runner_in_process(arriving, env, monkeypatch)
    try:
        runner.drain()
    finally:
        runner.close()
    ran = [run["options"]["direction"] for run in runs(env)]
    assert ran == [task["direction"] for task in pending]
    assert {get_task(api, task["id"])["status"] for task in pending} == {"completed"}
    assert len(arriving.arrived) >= 3
    assert {get_task(api, task["id"])["status"] for task in arriving.arrived} == {"pending"}


def test_polling_runs_the_oldest_tasks_first(api, env, monkeypatch):
    pending = [create_task(api, f"old-{number}", "spec") for number in range(5)]

    def all_done() -> bool:
        return all(get_task(api, task["id"])["status"] == "completed" for task in pending)

    # More tasks arrive with each listing than a page holds: listing the newest first,
    # the runner would never see the old ones.
    arriving = ArrivingTasks(api, per_listing=4, enough=all_done)
    runner = runner_in_process(arriving, env, monkeypatch)
    try:
        runner.poll(0.1)
    finally:
        runner.close()
    assert all_done()
    ran = [run["options"]["direction"] for run in runs(env)]
    assert ran[:5] == [task["direction"] for task in pending]
