"""Attempts and retries: max_attempts, retryable failures and their backoff, and the one
metric record each task leaves."""
from __future__ import annotations

from pathlib import Path

import pytest

from app.clock import isoformat
from app.services.task_leases import LOST_NOTE
from tests.api.queue_client import claim, create, get, patch, routed_client
from tests.support import FakeClock
from tests.support.stores import seed_lines, stored_records

LOCAL_MODEL = "ollama/glm-4.7-flash:latest"


def fail(client, task_id: str, runner_id: str, **body):
    response = patch(client, task_id, runner_id=runner_id, status="failed", **body)
    assert response.status_code == 200, response.json
    return response.json


def in_seconds(clock: FakeClock, seconds: float) -> str:
    clock.advance(seconds=seconds)
    moment = isoformat(clock())
    clock.advance(seconds=-seconds)
    return moment


def test_max_attempts_comes_from_the_body_the_routing_or_the_setting(
    tmp_path: Path, logs_dir: Path, clock: FakeClock
) -> None:
    client = routed_client(tmp_path, logs_dir, clock, {"impl": {"max_attempts": 5}},
                           AGENT_MAX_ATTEMPTS=4)
    assert create(client, "impl")["max_attempts"] == 5
    assert create(client, "spec")["max_attempts"] == 4
    assert create(client, "impl", max_attempts=2)["max_attempts"] == 2


def test_max_attempts_defaults_to_three(client) -> None:
    task = create(client)
    assert task["max_attempts"] == 3 and task["priority"] == 0 and task["run_after"] is None
    listed = client.get("/api/agent/tasks").json["tasks"][0]
    assert (listed["priority"], listed["run_after"]) == (0, None)


def test_tasks_stored_before_queue_control_read_with_defaults(client, logs_dir: Path) -> None:
    task_id = "a" * 32
    seed_lines(logs_dir, "tasks.jsonl", [{
        "id": task_id, "direction": "d", "task_type": "impl", "status": "pending",
        "model": LOCAL_MODEL, "context": {}, "output": None,
        "created_at": "2026-03-01T11:00:00.000000+00:00",
        "updated_at": "2026-03-01T11:00:00.000000+00:00", "started_at": None,
        "duration_seconds": None, "runner_id": None, "lease_expires_at": None,
        "attempts": 0}])
    task = get(client, task_id)
    assert (task["priority"], task["run_after"], task["max_attempts"]) == (0, None, 3)
    assert task["cancel_requested"] is False and task["last_error"] is None
    [listed] = client.get("/api/agent/tasks").json["tasks"]
    assert (listed["priority"], listed["run_after"]) == (0, None)
    assert claim(client, "r1")["id"] == task_id


@pytest.mark.parametrize("value", [0, 21, 2.0, "3", True, None])
def test_max_attempts_out_of_range_is_422(client, value) -> None:
    response = client.post("/api/agent/tasks", json={"direction": "d", "task_type": "spec",
                                                     "max_attempts": value})
    assert response.status_code == 422 and "max_attempts" in response.json["errors"]


def test_a_retryable_failure_waits_retry_after_seconds_then_runs_again(
    client, clock: FakeClock, logs_dir: Path
) -> None:
    task_id = create(client)["id"]
    claim(client, "r1", lease_seconds=60)
    expected = in_seconds(clock, 45)
    retried = fail(client, task_id, "r1", retryable=True, retry_after_seconds=45,
                   output="x" * 5000 + "connection reset", log_append="working\n")
    assert retried["status"] == "pending" and retried["run_after"] == expected
    assert retried["runner_id"] is None and retried["lease_expires_at"] is None
    assert retried["last_error"] == ("x" * 5000 + "connection reset")[-4000:]
    assert retried["output"] is None and retried["attempts"] == 1
    log = client.get(f"/api/agent/tasks/{task_id}/log").json["log"]
    assert log.startswith("working\n") and "connection reset" in log
    assert "attempt 1 of 3 failed" in log
    assert stored_records(logs_dir) == []

    clock.advance(seconds=44)
    assert claim(client, "r2") is None
    clock.advance(seconds=1)
    again = claim(client, "r2")
    assert again["id"] == task_id and again["attempts"] == 2


def test_the_same_retryable_report_sent_twice_retries_once(client, clock) -> None:
    task_id = create(client)["id"]
    claim(client, "r1")
    first = fail(client, task_id, "r1", retryable=True, retry_after_seconds=10)
    clock.advance(seconds=1)
    assert fail(client, task_id, "r1", retryable=True, retry_after_seconds=10) == first
    assert fail(client, task_id, "r1", retryable=True) == first


def test_backoff_doubles_per_attempt_up_to_its_cap(
    tmp_path: Path, logs_dir: Path, clock: FakeClock
) -> None:
    client = routed_client(tmp_path, logs_dir, clock, {"impl": {
        "max_attempts": 5, "backoff_seconds": 10, "backoff_max_seconds": 25}})
    task_id = create(client, "impl")["id"]
    for attempt, delay in enumerate([10, 20, 25, 25], start=1):
        assert claim(client, f"r{attempt}")["attempts"] == attempt
        retried = fail(client, task_id, f"r{attempt}", retryable=True)
        assert retried["status"] == "pending" and retried["run_after"] == in_seconds(
            clock, delay)
        clock.advance(seconds=delay)


def test_the_default_backoff_is_thirty_seconds(client, clock) -> None:
    task_id = create(client)["id"]
    claim(client, "r1")
    assert fail(client, task_id, "r1", retryable=True)["run_after"] == in_seconds(clock, 30)


def test_a_retryable_failure_of_the_last_attempt_fails_with_one_record(
    client, clock, logs_dir: Path
) -> None:
    task_id = create(client, max_attempts=2)["id"]
    claim(client, "r1")
    fail(client, task_id, "r1", retryable=True, retry_after_seconds=0, output="first")
    claim(client, "r2")
    clock.advance(seconds=4)
    failed = fail(client, task_id, "r2", retryable=True, output="second")
    assert failed["status"] == "failed" and failed["attempts"] == 2
    assert failed["last_error"] == "second" and failed["output"] == "second"
    assert claim(client, "r3") is None
    [record] = stored_records(logs_dir)
    assert (record["task_id"], record["status"], record["duration_seconds"]) == (
        task_id, "failed", 4)


def test_a_failure_not_said_retryable_fails_at_once(client, logs_dir: Path) -> None:
    task_id = create(client)["id"]
    claim(client, "r1")
    failed = fail(client, task_id, "r1", output="bad input", duration_seconds=2)
    assert failed["status"] == "failed" and failed["last_error"] == "bad input"
    assert failed["attempts"] == 1
    assert [record["status"] for record in stored_records(logs_dir)] == ["failed"]


def test_a_retried_then_completed_task_has_one_record_of_its_last_attempt(
    client, clock, logs_dir: Path
) -> None:
    task_id = create(client)["id"]
    claim(client, "r1")
    clock.advance(seconds=100)
    fail(client, task_id, "r1", retryable=True, retry_after_seconds=5)
    clock.advance(seconds=5)
    claim(client, "r2")
    clock.advance(seconds=7)
    done = patch(client, task_id, runner_id="r2", status="completed").json
    assert done["status"] == "completed" and done["duration_seconds"] == 7
    [record] = stored_records(logs_dir)
    assert (record["status"], record["duration_seconds"]) == ("completed", 7)


def test_a_lease_lost_before_the_last_attempt_pends_at_once_by_the_tasks_own_bound(
    client, clock, logs_dir: Path
) -> None:
    task_id = create(client, max_attempts=2)["id"]
    claim(client, "r1", lease_seconds=10)
    clock.advance(seconds=11)
    task = get(client, task_id)
    assert task["status"] == "pending" and task["run_after"] is None
    claim(client, "r2", lease_seconds=10)
    clock.advance(seconds=11)
    assert get(client, task_id)["status"] == "running"  # the last attempt's grace lease
    clock.advance(seconds=10)
    task = get(client, task_id)
    assert (task["status"], task["output"]) == ("failed", LOST_NOTE)
    assert [record["status"] for record in stored_records(logs_dir)] == ["failed"]


@pytest.mark.parametrize("body", [
    {"runner_id": "r1", "status": "completed", "retryable": True},
    {"status": "failed", "retryable": True},
    {"runner_id": "r1", "status": "failed", "retry_after_seconds": 5},
    {"runner_id": "r1", "status": "failed", "retryable": False, "retry_after_seconds": 5},
    {"runner_id": "r1", "status": "failed", "retryable": 1},
    {"runner_id": "r1", "status": "failed", "retryable": "true"},
    {"runner_id": "r1", "status": "failed", "retryable": True, "retry_after_seconds": -1},
    {"runner_id": "r1", "status": "failed", "retryable": True, "retry_after_seconds": "5"},
    {"runner_id": "r1", "status": "failed", "retryable": True, "retry_after_seconds": 1e300},
])
def test_bad_retry_fields_are_422(client, body) -> None:
    task_id = create(client)["id"]
    claim(client, "r1")
    response = patch(client, task_id, **body)
    assert response.status_code == 422, response.json
    assert get(client, task_id)["status"] == "running"
