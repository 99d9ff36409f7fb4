"""The runner end to end: real gunicorn, real runner processes, real commands."""
from __future__ import annotations

import os
import re
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from bench.servers import runner_env
from tests.support.runner import (
    create_task, get_task, metric_records, process_alive, run_runner, runs, start_api,
    start_runner, task_log, wait_for,
)

SERVER_FILES = {"metrics.jsonl", "metrics.jsonl.lock", "tasks.jsonl", "tasks.jsonl.lock",
                "gunicorn.out"}


@pytest.fixture
def api(tmp_path: Path, logs_dir: Path) -> Iterator[str]:
    server = start_api(tmp_path, logs_dir)
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


def server_log(api: str, task_id: str) -> str:
    response = requests.get(f"{api}/api/agent/tasks/{task_id}/log", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["log"]


def progressed(api: str, task_id: str) -> dict | None:
    """The task once a heartbeat brought it progress."""
    task = get_task(api, task_id)
    return task if task["progress_pct"] is not None else None


def test_two_runners_run_each_task_exactly_once(api, env, logs_dir, tmp_path, backend):
    tasks = {}
    for number in range(200):
        task = create_task(api, f"task-{number}", "spec" if number % 2 else "review")
        tasks[task["id"]] = task
    runner_envs = [{**env, "AGENT_RUNNER_DIR": str(tmp_path / f"runner-{n}")} for n in (1, 2)]
    assert not any("AGENT_LOGS_DIR" in each for each in runner_envs)
    runners = [start_runner(each, "--once", "--workers", "2") for each in runner_envs]
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
    logs = {}
    for each in runner_envs:
        logs.update({path.name: path for path in Path(each["AGENT_RUNNER_DIR"], "task-logs")
                     .iterdir()})
    for task_id, created in list(tasks.items())[::20]:
        task = get_task(api, task_id)
        assert task["status"] == by_id[task_id]["status"] == "completed"
        assert task["model"] == by_id[task_id]["model"] == created["model"]
        assert task["duration_seconds"] == by_id[task_id]["duration_seconds"]
        assert f"working on: {created['direction']}\na note on stderr\n" in task["output"]
        assert logs[f"task_{task_id}.log"].read_text() == task["output"]
        assert server_log(api, task_id) == task["output"]
    assert set(logs) == {f"task_{task_id}.log" for task_id in tasks}
    # The runners wrote nothing where the service keeps its files (on PostgreSQL, none
    # but gunicorn's output).
    if backend == "jsonl":
        assert {path.name for path in logs_dir.iterdir()} == SERVER_FILES | {"task-logs"}
        assert {path.name for path in (logs_dir / "task-logs").iterdir()} == {
            f"{task_id}.log" for task_id in tasks}
    else:
        assert {path.name for path in logs_dir.iterdir()} == {"gunicorn.out"}
    finished = sum((Path(each["AGENT_RUNNER_DIR"]) / "agent_runner.log").read_text()
                   .count(" finished ") for each in runner_envs)
    assert finished == 200


def test_timeout_kills_the_whole_process_group(api, env, logs_dir, pid_file):
    task = create_task(api, str(pid_file), "test")
    status, stderr = run_runner(env, "--once", "--timeout", "1")
    assert status == 0, stderr
    child = int(pid_file.read_text())
    assert not process_alive(child)
    assert task_log(env, task["id"]).read_text() == (
        f"child {child} started\n[timeout after 1 s]\n")
    assert re.search(rf"finished {task['id']} test fake/stubborn failed in 1\.\d\d s", stderr)
    # A timeout is worth retrying (test_runner_retries.py): the service sends the task
    # back to pending while attempts remain, and records no metric yet.
    assert get_task(api, task["id"])["status"] == "pending"
    assert metric_records(logs_dir) == []


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


def test_a_nul_in_the_direction_reaches_the_command_as_a_replacement_character(
        api, env, logs_dir):
    """No argument of a command can hold a NUL: the service keeps U+FFFD in its place."""
    task = create_task(api, "before\u0000after", "spec")
    assert task["direction"] == "before\ufffdafter"
    status, stderr = run_runner(env, "--once")
    assert status == 0, stderr
    reported = get_task(api, task["id"])
    assert reported["status"] == "completed", reported["output"]
    assert [(r["task_id"], r["status"]) for r in metric_records(logs_dir)] == [
        (task["id"], "completed")]
    assert "Traceback" not in stderr
    assert [run["argv"][-1] for run in runs(env)] == ["before\ufffdafter"]


def test_a_log_that_cannot_be_created_fails_the_task(api, env):
    task = create_task(api, "anything", "spec")
    task_log(env, task["id"]).mkdir(parents=True)
    status, stderr = run_runner(env, "--once")
    assert status == 0, stderr
    reported = get_task(api, task["id"])
    assert reported["status"] == "failed"
    assert reported["output"].startswith("[runner error: IsADirectoryError: ")
    assert runs(env) == []


def test_a_disk_full_while_writing_the_log_fails_the_task(api, env):
    task = create_task(api, "print=10 sleep=0.5", "spec")
    log_path = task_log(env, task["id"])
    log_path.parent.mkdir(parents=True)
    log_path.symlink_to("/dev/full")
    status, stderr = run_runner(env, "--once")
    assert status == 0, stderr
    reported = get_task(api, task["id"])
    assert reported["status"] == "failed"
    assert "working on: print=10 sleep=0.5\n" in reported["output"]
    assert reported["output"].endswith(
        "[runner error: OSError: [Errno 28] No space left on device]\n")
    assert reported["duration_seconds"] < 0.5  # stopped at once, not run to its end


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


def test_a_huge_output_is_capped_in_the_log_and_the_report(api, env):
    env = {**env, "AGENT_TASK_LOG_MAX_BYTES": "65536"}
    task = create_task(api, "print=500000", "spec")
    status, stderr = run_runner(env, "--once")
    assert status == 0, stderr
    printed = len("working on: print=500000\na note on stderr\n") + sum(
        len(f"line {number}\n") for number in range(500_000))
    assert printed > 5_000_000
    log = task_log(env, task["id"]).read_bytes()
    head, marker, tail = log.partition(f"\n[... {printed - 65536} bytes left out ...]\n".encode())
    assert marker, log[32768:32868]
    assert len(head) == len(tail) == 32768
    assert head.startswith(b"working on: print=500000\na note on stderr\nline 0\nline 1\n")
    assert tail.endswith(b"line 499998\nline 499999\n")

    reported = get_task(api, task["id"])
    assert reported["status"] == "completed"
    output = reported["output"]
    assert len(output.encode()) == 64 * 1024
    assert output.endswith("line 499998\nline 499999\n")
    assert server_log(api, task["id"]).endswith(output)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_interrupts_running_tasks(api, env, logs_dir, pid_file, signum):
    task = create_task(api, str(pid_file), "test")
    runner = start_runner(env, "--once")
    log_file = task_log(env, task["id"])
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
    assert get_task(api, second["id"])["output"].endswith("[exit status 1]\n")


def test_a_decision_comes_back_to_the_command(api, env, logs_dir):
    task = create_task(api, "ask", "spec")
    status, stderr = run_runner(env, "--once")
    assert status == 0, stderr
    asked = get_task(api, task["id"])
    assert (asked["status"], asked["decision_prompt"]) == ("needs_decision", "ship it?")
    assert asked["output"].endswith("::needs-decision:: ship it?\n")  # no note: exit 3 ignored
    assert metric_records(logs_dir) == []

    answer = requests.patch(f"{api}/api/agent/tasks/{task['id']}", json={"decision": "yes"},
                            timeout=30)
    assert answer.status_code == 200, answer.text
    status, stderr = run_runner(env, "--once")
    assert status == 0, stderr
    done = get_task(api, task["id"])
    assert done["status"] == "completed" and done["output"].endswith("decision: yes\n")
    assert [run["decision"] for run in runs(env)] == [None, "yes"]
    assert [(r["task_id"], r["status"]) for r in metric_records(logs_dir)] == [
        (task["id"], "completed")]


def test_heartbeats_carry_progress_and_output_and_renew_the_lease(api, env):
    task = create_task(api, "progress=40:compiling sleep=6", "spec")
    runner = start_runner(env, "--once", "--lease-seconds", "6")
    try:
        seen = wait_for(lambda: progressed(api, task["id"]), "the first heartbeat", timeout=10)
        assert seen["status"] == "running" and seen["current_step"] == "compiling"
        assert "working on: progress=40:compiling sleep=6\n" in server_log(api, task["id"])
        wait_for(lambda: get_task(api, task["id"])["lease_expires_at"]
                 > seen["lease_expires_at"], "a renewed lease", timeout=10)
        _, stderr = runner.communicate(timeout=60)
    finally:
        runner.kill()
    assert runner.returncode == 0, stderr
    done = get_task(api, task["id"])
    assert done["status"] == "completed"
    # Each part of the output reached the service once: by heartbeat, or with the report.
    assert server_log(api, task["id"]) == done["output"] == task_log(env, task["id"]).read_text()
