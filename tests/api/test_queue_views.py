"""What the operators' views show of queue control: tasks waiting to run apart from
scheduled ones, cancel requests, and which tasks need a person now that failures may be
retried and tasks cancelled."""
from __future__ import annotations

from tests.api.queue_client import TASKS, claim, create, get, patch

PIPELINE = "/api/agent/pipeline-status"


def created(client, clock, *priorities: int, **body) -> list[str]:
    """New tasks of these priorities, a second apart."""
    ids = []
    for priority in priorities:
        ids.append(create(client, priority=priority, **body)["id"])
        clock.advance(seconds=1)
    return ids


def report_failed(client, task_id: str, runner_id: str, **body) -> dict:
    response = patch(client, task_id, runner_id=runner_id, status="failed", **body)
    assert response.status_code == 200, response.json
    return response.json


def cancel(client, task_id: str, **body) -> dict:
    response = client.post(f"{TASKS}/{task_id}/cancel", json=body)
    assert response.status_code == 200, response.json
    return response.json


def listed(client, path: str) -> list[str]:
    return [task["id"] for task in client.get(path).json["tasks"]]


def test_waiting_tasks_are_listed_in_claim_order_apart_from_scheduled_ones(
    client, clock
) -> None:
    low, high, high_later = created(client, clock, 0, 5, 5)
    due_already = create(client, priority=1, run_after="2026-03-01T11:00:00Z")["id"]
    in_two_hours = create(client, priority=100, run_after="2026-03-01T14:00:00Z")["id"]
    in_an_hour = create(client, run_after="2026-03-01T13:00:00Z")["id"]
    status = client.get(PIPELINE).json
    waiting = [task["id"] for task in status["waiting"]]
    assert waiting == [high, high_later, due_already, low]
    assert [task["priority"] for task in status["waiting"]] == [5, 5, 1, 0]
    assert [(task["id"], task["run_after"], task["starts_in_seconds"])
            for task in status["scheduled"]] == [
        (in_an_hour, "2026-03-01T13:00:00.000000+00:00", 3600 - 3),
        (in_two_hours, "2026-03-01T14:00:00.000000+00:00", 7200 - 3)]
    assert status["queue"] == {"waiting": 4, "scheduled": 2, "running": 0,
                               "needs_decision": 0, "cancelled": 0}
    assert [claim(client, f"r{number}", lease_seconds=3600)["id"]
            for number in range(4)] == waiting
    assert claim(client, "r4") is None

    clock.advance(minutes=60, seconds=-2)  # the first scheduled task may be claimed now
    status = client.get(PIPELINE).json
    assert [task["id"] for task in status["waiting"]] == [in_an_hour]
    assert status["waiting"][0]["wait_seconds"] == 1
    assert [task["id"] for task in status["scheduled"]] == [in_two_hours]
    assert (status["queue"]["waiting"], status["queue"]["scheduled"],
            status["queue"]["running"]) == (1, 1, 4)


def test_a_retry_waiting_for_its_time_is_scheduled_with_its_attempts(client, clock) -> None:
    task_id = create(client, max_attempts=2)["id"]
    claim(client, "r1")
    report_failed(client, task_id, "r1", output="rate limited", retryable=True,
                  retry_after_seconds=600)
    [scheduled] = client.get(PIPELINE).json["scheduled"]
    assert (scheduled["id"], scheduled["attempts"], scheduled["max_attempts"],
            scheduled["starts_in_seconds"]) == (task_id, 1, 2, 600)
    assert client.get(PIPELINE).json["waiting"] == []


def test_running_tasks_show_whether_a_cancel_was_asked_for(client, clock) -> None:
    asked, running = created(client, clock, 0, 0)
    claim(client, "r1")
    claim(client, "r2")
    cancel(client, asked, reason="wrong branch")
    rows = {task["id"]: task for task in client.get(PIPELINE).json["running"]}
    assert (rows[asked]["cancel_requested"], rows[asked]["cancel_reason"]) == (
        True, "wrong branch")
    assert (rows[running]["cancel_requested"], rows[running]["cancel_reason"]) == (False, None)


def test_a_scheduled_task_is_never_stuck_and_a_retry_waits_from_its_run_after(
    client, clock
) -> None:
    scheduled = create(client, run_after="2026-03-01T15:00:00Z")["id"]
    retried = create(client, max_attempts=2)["id"]
    claim(client, "r1", lease_seconds=3600)
    clock.advance(minutes=50)
    report_failed(client, retried, "r1", retryable=True, retry_after_seconds=300)
    clock.advance(minutes=15)  # created 65 minutes ago, may be claimed for 10
    waiting = create(client)["id"]
    attention = client.get(PIPELINE).json["attention"]
    assert attention["stuck"] == [] and attention["flags"] == []

    clock.advance(minutes=55)  # 2 hours on: the scheduled task is still to come
    status = client.get(PIPELINE).json
    assert [task["id"] for task in status["scheduled"]] == [scheduled]
    stuck = status["attention"]["stuck"]
    assert [(task["id"], task["age_seconds"]) for task in stuck] == [(retried, 65 * 60)]
    assert status["attention"]["flags"] == [f"{retried} pending for 65 min"]

    clock.advance(minutes=5)  # the new task has waited an hour too: longest first
    stuck = client.get(PIPELINE).json["attention"]["stuck"]
    assert [(task["id"], task["age_seconds"]) for task in stuck] == [
        (retried, 70 * 60), (waiting, 60 * 60)]


def test_attention_lists_tasks_failed_after_their_last_attempt_never_cancelled(
    client, clock
) -> None:
    retried, not_retried, lost = created(client, clock, 0, 0, 0)
    [last_attempt] = created(client, clock, 0, max_attempts=2)
    [lost_last] = created(client, clock, 0, max_attempts=1)
    cancelled_ids = created(client, clock, 0, 0, 0)

    assert claim(client, "r1")["id"] == retried
    report_failed(client, retried, "r1", retryable=True)  # back to pending: not listed
    assert claim(client, "r2")["id"] == not_retried
    report_failed(client, not_retried, "r2", output="tests failed")
    assert claim(client, "r3", lease_seconds=5)["id"] == lost  # attempts left: not listed
    assert claim(client, "r4")["id"] == last_attempt
    report_failed(client, last_attempt, "r4", output="first", retryable=True,
                  retry_after_seconds=0)
    assert claim(client, "r5")["id"] == last_attempt
    report_failed(client, last_attempt, "r5", output="second", retryable=True)
    assert claim(client, "r6", lease_seconds=5)["id"] == lost_last
    pending_cancelled, running_cancelled, asking_cancelled = cancelled_ids
    cancel(client, pending_cancelled)
    assert claim(client, "r7")["id"] == running_cancelled
    cancel(client, running_cancelled)
    assert patch(client, running_cancelled, runner_id="r7",
                 status="cancelled").status_code == 200
    assert patch(client, asking_cancelled, status="needs_decision",
                 decision_prompt="which way?").status_code == 200
    cancel(client, asking_cancelled)
    clock.advance(seconds=6)  # the leases of lost and of lost_last's only attempt run out

    assert (get(client, retried)["status"], get(client, lost)["status"]) == (
        "pending", "pending")
    assert client.get(f"{TASKS}/count").json["by_status"]["running"] == 1  # lost_last's
    clock.advance(seconds=5)  # grace lease of its last attempt runs out too
    needing = client.get(f"{TASKS}/attention").json
    rows = {task["id"]: task for task in needing["tasks"]}
    assert needing["total"] == 3 and set(rows) == {not_retried, last_attempt, lost_last}
    assert [rows[task]["status"] for task in rows] == ["failed"] * 3
    assert (rows[last_attempt]["attempts"], rows[last_attempt]["max_attempts"],
            rows[last_attempt]["last_error"], rows[last_attempt]["output"]) == (
        2, 2, "second", "second")
    assert (rows[not_retried]["attempts"], rows[not_retried]["max_attempts"],
            rows[not_retried]["output"]) == (1, 3, "tests failed")
    assert (rows[lost_last]["attempts"], rows[lost_last]["output"]) == (
        1, "[lease expired: runner lost]")
    assert sorted(listed(client, f"{TASKS}?status=cancelled&limit=500")) == sorted(
        cancelled_ids)
    assert sorted(listed(client, f"{TASKS}?status=failed&limit=500")) == sorted(rows)
    assert client.get(PIPELINE).json["queue"]["cancelled"] == 3
