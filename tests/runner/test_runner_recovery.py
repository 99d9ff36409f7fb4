"""Nothing is lost when a runner dies or the service goes away: real gunicorn, real
runners, killed and stopped for real."""
from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.services.task_leases import LOST_NOTE
from bench.servers import runner_env
from tests.support.runner import (
    create_task, get_task, kill_groups, metric_records, outbox, restart_api, run_runner, runs,
    start_api, start_runner, wait_for,
)
from tests.support import GunicornServer

LEASE = "5"


@pytest.fixture
def env(logs_dir: Path, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A runner's environment (its service to be set); the commands it leaves running
    when it is killed never outlive the test."""
    env = runner_env("", logs_dir, FAKE_AGENT_RUNS=str(tmp_path / "runs.jsonl"))
    yield env
    kill_groups([run["pid"] for run in runs(env)])


@pytest.fixture
def servers() -> Iterator[list[GunicornServer]]:
    """The servers a test starts, stopped at its end."""
    started: list[GunicornServer] = []
    yield started
    for server in started:
        server.stop()


def running_commands(env: dict[str, str], count: int) -> list[dict]:
    return wait_for(lambda: len(runs(env)) >= count and runs(env), f"{count} runs")


def kill_runner_and_commands(runner: subprocess.Popen[str], env: dict[str, str]) -> None:
    runner.send_signal(signal.SIGKILL)
    runner.communicate(timeout=30)
    kill_groups([run["pid"] for run in runs(env)])


def has_status(api: str, task_id: str, status: str) -> dict | None:
    task = get_task(api, task_id)
    return task if task["status"] == status else None


def test_tasks_of_a_killed_runner_run_again_and_end_after_max_attempts(
    env, logs_dir, tmp_path, servers
):
    servers.append(start_api(tmp_path, logs_dir, AGENT_MAX_ATTEMPTS="2"))
    api = servers[0].base_url
    env["AGENT_API_BASE"] = api
    again = create_task(api, "first-sleep=60", "spec")  # quick the second time
    never = create_task(api, "sleep=60", "spec")
    options = ("--workers", "2", "--lease-seconds", LEASE, "--interval", "0.5")
    first = start_runner(env, *options)
    running_commands(env, 2)
    kill_runner_and_commands(first, env)
    assert {get_task(api, t["id"])["status"] for t in (again, never)} == {"running"}

    second = start_runner(env, *options)  # claims both once their leases run out
    running_commands(env, 4)
    wait_for(lambda: get_task(api, again["id"])["status"] == "completed", "the second run")
    kill_runner_and_commands(second, env)
    finished = wait_for(lambda: has_status(api, never["id"], "failed"),
                        "the lease of the last attempt to run out", timeout=30)
    assert finished["output"] == LOST_NOTE and finished["attempts"] == 2
    done = get_task(api, again["id"])
    assert (done["status"], done["attempts"]) == ("completed", 2)
    assert Counter(run["options"]["direction"] for run in runs(env)) == {
        again["direction"]: 2, never["direction"]: 2}
    assert sorted((r["task_id"], r["status"]) for r in metric_records(logs_dir)) == sorted(
        [(again["id"], "completed"), (never["id"], "failed")])


def test_reports_wait_for_the_service_and_keep_their_durations(
    env, logs_dir, tmp_path, servers
):
    servers.append(start_api(tmp_path, logs_dir))
    api = servers[0].base_url
    env["AGENT_API_BASE"] = api
    tasks = [create_task(api, f"task-{n} sleep=3", "spec") for n in (1, 2)]
    runner = start_runner(env, "--workers", "2", "--interval", "0.2", "--lease-seconds", "30")
    try:
        running_commands(env, 2)
        servers[0].stop()
        waiting = wait_for(lambda: len(outbox(env)) == 2 and outbox(env), "reports to wait",
                           timeout=30)
        assert {saved["task_id"] for saved in waiting} == {task["id"] for task in tasks}
        assert {saved["body"]["status"] for saved in waiting} == {"completed"}
        time.sleep(2)  # a report stamped when it is delivered would show these seconds
        servers.append(restart_api(servers[0]))
        for task in tasks:
            wait_for(lambda: get_task(api, task["id"])["status"] == "completed",
                     "the reports to be delivered", timeout=60)
        wait_for(lambda: outbox(env) == [], "the outbox to empty", timeout=10)
    finally:
        runner.send_signal(signal.SIGTERM)
        _, stderr = runner.communicate(timeout=60)
    assert runner.returncode == 128 + signal.SIGTERM, stderr
    records = metric_records(logs_dir)
    assert sorted(r["task_id"] for r in records) == sorted(t["id"] for t in tasks)
    # What the runner measured, not how long the reports waited.
    assert all(3 <= r["duration_seconds"] < 4 for r in records), records


def test_a_runner_started_again_sends_what_its_outbox_holds(env, logs_dir, tmp_path, servers):
    servers.append(start_api(tmp_path, logs_dir))
    api = servers[0].base_url
    env["AGENT_API_BASE"] = api
    task = create_task(api, "sleep=2", "spec")
    runner = start_runner(env, "--interval", "0.2", "--lease-seconds", "30")
    running_commands(env, 1)
    servers[0].stop()
    wait_for(lambda: outbox(env), "the report to wait", timeout=30)
    runner.send_signal(signal.SIGTERM)
    _, stderr = runner.communicate(timeout=60)
    assert runner.returncode == 128 + signal.SIGTERM, stderr
    [saved] = outbox(env)
    assert saved["task_id"] == task["id"] and 2 <= saved["body"]["duration_seconds"] < 3

    servers.append(restart_api(servers[0]))
    assert get_task(api, task["id"])["status"] == "running"
    status, stderr = run_runner(env, "--once")
    assert status == 0, stderr
    assert outbox(env) == []
    done = get_task(api, task["id"])
    assert done["status"] == "completed"
    assert done["duration_seconds"] == saved["body"]["duration_seconds"]
    [record] = metric_records(logs_dir)
    assert record["duration_seconds"] == saved["body"]["duration_seconds"]
    assert len(runs(env)) == 1
