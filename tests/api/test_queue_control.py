"""Queue control: cancellation, priorities and delayed tasks, caps per model and tier,
reruns, and how cancelled tasks are counted and listed."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.api.queue_client import TASKS, claim, create, get, patch, routed_client
from tests.support import FakeClock
from tests.support.stores import stored_records


def cancel(client, task_id: str, **body):
    return client.post(f"{TASKS}/{task_id}/cancel", json=body)


def rerun(client, task_id: str):
    return client.post(f"{TASKS}/{task_id}/rerun")


def claimed(client, runner_id: str) -> str:
    """The id of a new task that ``runner_id`` claims."""
    task_id = create(client)["id"]
    assert claim(client, runner_id)["id"] == task_id
    return task_id


def created(client, clock: FakeClock, *task_types: str) -> list[str]:
    """New tasks of these types, a second apart (so claims take them in this order)."""
    ids = []
    for task_type in task_types:
        ids.append(create(client, task_type)["id"])
        clock.advance(seconds=1)
    return ids


# Cancellation

def test_a_pending_task_is_cancelled_at_once_and_never_claimed(client, logs_dir) -> None:
    task_id = create(client)["id"]
    cancelled = cancel(client, task_id, reason="not needed any more")
    assert cancelled.status_code == 200
    assert cancelled.json["status"] == "cancelled"
    assert cancelled.json["cancel_reason"] == "not needed any more"
    assert claim(client, "r1") is None
    assert stored_records(logs_dir) == []


def test_cancel_takes_no_body(client) -> None:
    task_id = create(client)["id"]
    response = client.post(f"{TASKS}/{task_id}/cancel")
    assert response.status_code == 200 and response.json["status"] == "cancelled"
    assert response.json["cancel_reason"] is None


def test_a_task_that_needs_a_decision_is_cancelled_at_once(client) -> None:
    task_id = create(client)["id"]
    patch(client, task_id, status="needs_decision", decision_prompt="which way?")
    assert cancel(client, task_id).json["status"] == "cancelled"


def test_a_running_task_is_asked_to_stop_and_its_runner_reports_cancelled(
    client, clock, logs_dir
) -> None:
    task_id = create(client)["id"]
    claim(client, "r1")
    asked = cancel(client, task_id, reason="wrong branch").json
    assert (asked["status"], asked["cancel_requested"]) == ("running", True)
    beat = patch(client, task_id, runner_id="r1")
    assert beat.status_code == 200 and beat.json["cancel_requested"] is True
    assert patch(client, task_id, runner_id="r2", status="cancelled").status_code == 409
    clock.advance(seconds=3)
    stopped = patch(client, task_id, runner_id="r1", status="cancelled", output="stopped")
    assert stopped.status_code == 200 and stopped.json["status"] == "cancelled"
    assert stopped.json["duration_seconds"] == 3 and stopped.json["cancel_reason"] == "wrong branch"
    again = patch(client, task_id, runner_id="r1", status="cancelled")
    assert again.status_code == 200 and again.json == stopped.json
    assert stored_records(logs_dir) == []


def test_a_cancel_requested_task_whose_runner_is_lost_ends_cancelled(
    client, clock, logs_dir
) -> None:
    task_id = create(client)["id"]
    claim(client, "r1", lease_seconds=10)
    cancel(client, task_id)
    clock.advance(seconds=11)
    assert get(client, task_id)["status"] == "cancelled"
    assert claim(client, "r2") is None
    assert stored_records(logs_dir) == []


def test_a_cancel_requested_task_is_not_retried_nor_left_waiting_for_a_decision(
    client, logs_dir
) -> None:
    failing, asking = claimed(client, "r1"), claimed(client, "r2")
    cancel(client, failing)
    cancel(client, asking)
    failed = patch(client, failing, runner_id="r1", status="failed", retryable=True).json
    assert failed["status"] == "failed"
    asked = patch(client, asking, runner_id="r2", status="needs_decision",
                  decision_prompt="go on?").json
    assert asked["status"] == "cancelled"
    assert [record["status"] for record in stored_records(logs_dir)] == ["failed"]


@pytest.mark.parametrize("end", ["completed", "failed", "cancelled"])
def test_cancelling_an_ended_task_is_409(client, end) -> None:
    task_id = create(client)["id"]
    assert patch(client, task_id, status=end).status_code == 200
    response = cancel(client, task_id)
    assert response.status_code == 409 and response.json["detail"]
    assert get(client, task_id)["status"] == end


def test_cancelling_an_unknown_task_is_404(client) -> None:
    assert cancel(client, "0" * 32).status_code == 404


@pytest.mark.parametrize("body", [{"reason": "x" * 501}, {"reason": 5}, {"why": "x"}, [1]])
def test_bad_cancel_bodies_are_422(client, body) -> None:
    task_id = create(client)["id"]
    assert client.post(f"{TASKS}/{task_id}/cancel", json=body).status_code == 422
    assert get(client, task_id)["status"] == "pending"


def test_cancelled_tasks_are_counted_and_filtered_but_need_no_attention(client) -> None:
    cancelled, pending = create(client)["id"], create(client)["id"]
    cancel(client, cancelled)
    counted = client.get(f"{TASKS}/count").json
    assert counted["total"] == 2
    assert (counted["by_status"]["cancelled"], counted["by_status"]["pending"]) == (1, 1)
    listed = client.get(f"{TASKS}?status=cancelled").json
    assert [task["id"] for task in listed["tasks"]] == [cancelled] and listed["total"] == 1
    assert pending not in [task["id"] for task in listed["tasks"]]
    assert client.get(f"{TASKS}/attention").json["total"] == 0


def test_compaction_drops_old_cancelled_tasks_but_keeps_running_ones(
    app, client, clock
) -> None:
    cancelled, asked = created(client, clock, "spec", "spec")
    cancel(client, cancelled)
    patch(client, asked, status="running")  # a person runs it: no lease runs out
    assert cancel(client, asked).json["cancel_requested"] is True
    clock.advance(days=40)
    assert app.extensions["agent"].tasks.compact(30).expired == 1
    assert client.get(f"{TASKS}/{cancelled}").status_code == 404
    assert get(client, asked)["status"] == "running"


# Priorities and delayed tasks

def test_claims_take_the_highest_priority_then_the_oldest(client, clock) -> None:
    ids = {}
    for name, priority in [("low", -5), ("normal", 0), ("urgent", 100), ("high", 7),
                           ("normal_later", 0)]:
        ids[name] = create(client, priority=priority)["id"]
        clock.advance(seconds=1)
    order = [claim(client, f"r{n}")["id"] for n in range(5)]
    assert order == [ids[name] for name in ("urgent", "high", "normal", "normal_later",
                                            "low")]


def test_a_task_is_not_claimed_before_its_run_after(client, clock) -> None:
    later = create(client, priority=50, run_after="2026-03-01T14:01:00+02:00")
    assert later["run_after"] == "2026-03-01T12:01:00.000000+00:00"
    now = create(client)["id"]
    assert claim(client, "r1")["id"] == now
    clock.advance(seconds=59)
    assert claim(client, "r2") is None
    clock.advance(seconds=1)
    assert claim(client, "r2")["id"] == later["id"]
    summaries = {task["id"]: task for task in client.get(TASKS).json["tasks"]}
    assert summaries[later["id"]]["run_after"] == later["run_after"]


@pytest.mark.parametrize("field,value", [
    ("run_after", "2026-03-01T12:00:00"), ("run_after", "tomorrow"), ("run_after", 5),
    ("run_after", "0001-01-01T00:00:00+01:00"), ("priority", 101), ("priority", -101),
    ("priority", 1.5), ("priority", "1"), ("priority", True), ("priority", None),
])
def test_bad_priorities_and_run_after_are_422(client, field, value) -> None:
    response = client.post(TASKS, json={"direction": "d", "task_type": "spec", field: value})
    assert response.status_code == 422 and field in response.json["errors"]


def test_a_person_changes_the_priority_of_a_pending_task(client, clock) -> None:
    first, second = created(client, clock, "spec", "spec")
    changed = patch(client, second, priority=3, current_step="queued")
    assert changed.status_code == 200 and changed.json["priority"] == 3
    assert claim(client, "r1")["id"] == second
    assert patch(client, second, priority=1).status_code == 409
    assert patch(client, first, status="completed").status_code == 200
    assert patch(client, first, priority=1).status_code == 409


@pytest.mark.parametrize("body", [{"priority": 1, "status": "running"},
                                  {"priority": 1, "runner_id": "r1"},
                                  {"priority": 1, "decision": "yes"},
                                  {"priority": 200}])
def test_a_priority_goes_alone_and_in_range(client, body) -> None:
    task_id = create(client)["id"]
    assert patch(client, task_id, **body).status_code == 422
    assert get(client, task_id)["priority"] == 0


# Caps

CAPPED_ROUTING = {
    "impl": {"model": "m/a", "tier": "small"},
    "test": {"model": "m/b", "tier": "small"},
    "review": {"model": "m/c", "tier": "big"},
    "limits": {"models": {"m/a": 1}, "tiers": {"small": 2}},
}


@pytest.fixture
def capped(tmp_path: Path, logs_dir: Path, clock: FakeClock):
    return routed_client(tmp_path, logs_dir, clock, CAPPED_ROUTING)


def test_a_model_cap_passes_over_its_tasks_while_it_is_reached(capped, clock) -> None:
    first, second, other = created(capped, clock, "impl", "impl", "review")
    assert claim(capped, "r1")["id"] == first
    assert claim(capped, "r2")["id"] == other
    assert claim(capped, "r3") is None
    assert patch(capped, first, runner_id="r1", status="completed").status_code == 200
    assert claim(capped, "r3")["id"] == second


def test_a_tier_cap_counts_every_model_of_the_tier(capped, clock) -> None:
    a, b1, b2, big = created(capped, clock, "impl", "test", "test", "review")
    assert [claim(capped, f"r{n}")["id"] for n in range(3)] == [a, b1, big]
    assert claim(capped, "r3") is None
    clock.advance(seconds=301)  # the leases run out: the places are free again
    assert [claim(capped, f"r{n}")["id"] for n in range(3, 6)] == [a, b1, big]
    assert claim(capped, "r6") is None


def test_a_cap_does_not_hold_back_a_model_it_does_not_name(capped, clock) -> None:
    free = created(capped, clock, "spec", "spec", "spec")
    assert [claim(capped, f"r{n}")["id"] for n in range(3)] == free


# Rerun

@pytest.mark.parametrize("end", ["completed", "failed", "cancelled"])
def test_an_ended_task_runs_again_as_a_new_task(client, end) -> None:
    original = create(client, "impl", direction="build it", priority=4,
                      context={"repo": "x"}, max_attempts=7)
    patch(client, original["id"], status=end)
    response = rerun(client, original["id"])
    assert response.status_code == 201
    again = response.json
    assert again["id"] != original["id"] and again["rerun_of"] == original["id"]
    assert again["status"] == "pending" and again["attempts"] == 0
    assert {key: again[key] for key in ("direction", "task_type", "context", "priority")} == {
        "direction": "build it", "task_type": "impl", "context": {"repo": "x"}, "priority": 4}
    assert again["max_attempts"] == 3
    assert claim(client, "r1")["id"] == again["id"]


@pytest.mark.parametrize("status", ["pending", "running", "needs_decision"])
def test_a_task_that_has_not_ended_is_not_rerun(client, status) -> None:
    task_id = create(client)["id"]
    if status != "pending":
        patch(client, task_id, status=status, decision_prompt="which way?")
    assert rerun(client, task_id).status_code == 409
    assert client.get(TASKS).json["total"] == 1


def test_rerunning_an_unknown_task_is_404(client) -> None:
    assert rerun(client, "0" * 32).status_code == 404
