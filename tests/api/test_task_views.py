"""The operators' views: paging, counts, the attention list, the pipeline status."""
from __future__ import annotations

import pytest


def create(client, task_type: str = "spec", direction: str = "d") -> str:
    response = client.post("/api/agent/tasks", json={"direction": direction,
                                                     "task_type": task_type})
    assert response.status_code == 201
    return response.json["id"]


def patch(client, task_id: str, **body):
    response = client.patch(f"/api/agent/tasks/{task_id}", json=body)
    assert response.status_code == 200, response.json
    return response.json


def test_pages_with_offset_cover_every_task_once_in_a_stable_order(client, clock) -> None:
    ids = []
    for number in range(23):
        ids.append(create(client))
        if number % 4 == 0:
            clock.advance(seconds=1)  # several tasks share a created_at: id breaks ties
    for order in ("newest", "oldest"):
        seen = []
        for offset in range(0, 30, 5):
            page = client.get(f"/api/agent/tasks?limit=5&offset={offset}&order={order}").json
            assert page["total"] == 23
            seen += [task["id"] for task in page["tasks"]]
        assert sorted(seen) == sorted(ids) and len(seen) == 23
        keys = [(task["created_at"], task["id"]) for task in client.get(
            f"/api/agent/tasks?limit=500&order={order}").json["tasks"]]
        assert keys == sorted(keys, reverse=order == "newest")
    assert client.get("/api/agent/tasks?offset=-1").status_code == 422


def test_count_by_status(client) -> None:
    assert client.get("/api/agent/tasks/count").json == {
        "total": 0, "by_status": dict.fromkeys(
            ["pending", "running", "needs_decision", "completed", "failed", "cancelled"],
            0)}
    first, second, _ = create(client), create(client), create(client)
    patch(client, first, status="running")
    patch(client, second, status="failed")
    counted = client.get("/api/agent/tasks/count").json
    assert counted["total"] == 3
    assert (counted["by_status"]["pending"], counted["by_status"]["running"],
            counted["by_status"]["failed"]) == (1, 1, 1)


def test_attention_lists_what_needs_a_person_newest_first(client, clock) -> None:
    failed, asking, fine = create(client), create(client), create(client)
    patch(client, failed, status="failed", output="x" * 5000 + "the end")
    clock.advance(seconds=1)
    patch(client, asking, status="needs_decision", decision_prompt="ship it?")
    patch(client, fine, status="completed")
    listed = client.get("/api/agent/tasks/attention").json
    assert listed["total"] == 2
    assert [task["id"] for task in listed["tasks"]] == [asking, failed]
    assert listed["tasks"][0]["decision_prompt"] == "ship it?"
    assert listed["tasks"][1]["output"].endswith("the end")
    assert len(listed["tasks"][1]["output"]) == 4000
    assert client.get("/api/agent/tasks/attention?limit=1").json["tasks"][0]["id"] == asking
    assert client.get("/api/agent/tasks/attention?limit=101").status_code == 422


def test_pipeline_status_of_an_empty_queue_has_the_full_shape(client) -> None:
    assert client.get("/api/agent/pipeline-status").json == {
        "running": [], "waiting": [], "scheduled": [],
        "queue": {"waiting": 0, "scheduled": 0, "running": 0, "needs_decision": 0,
                  "cancelled": 0},
        "recent_completed": [],
        "attention": {"stuck": [], "repeated_failures": [], "low_success_rate": None,
                      "flags": []}}


def test_pipeline_status(client, clock) -> None:
    waiting = create(client, "review")
    running = create(client, "impl")
    claimed = client.post("/api/agent/tasks/claim", json={
        "runner_id": "host-1-abc", "task_types": ["impl"], "lease_seconds": 3600}).json
    assert claimed["id"] == running
    patch(client, running, runner_id="host-1-abc", progress_pct=25, current_step="tests",
          log_append="".join(f"line {n}\n" for n in range(30)))
    for _ in range(4):
        patch(client, create(client, "heal"), status="failed")
    done = create(client, "spec")
    patch(client, done, status="completed", duration_seconds=12)
    clock.advance(seconds=90)
    status = client.get("/api/agent/pipeline-status").json
    [row] = status["running"]
    assert (row["id"], row["runner_id"], row["progress_pct"], row["current_step"]) == (
        running, "host-1-abc", 25, "tests")
    assert row["lease_expires_at"] and row["live_tail"] == [f"line {n}" for n in range(10, 30)]
    assert row["cancel_requested"] is False
    [pending] = status["waiting"]
    assert pending["id"] == waiting and pending["wait_seconds"] == 90
    assert status["scheduled"] == []
    assert [(t["id"], t["duration_seconds"]) for t in status["recent_completed"]] == [(done, 12)]
    attention = status["attention"]
    assert attention["repeated_failures"] == [{"task_type": "heal", "consecutive_failures": 4}]
    assert attention["low_success_rate"] == {"window_days": 1, "rate": 0.2, "total": 5}
    assert attention["stuck"] == []
    assert len(attention["flags"]) == 2

    clock.advance(minutes=16)  # no heartbeat for 15 minutes: stuck
    stuck = client.get("/api/agent/pipeline-status").json["attention"]["stuck"]
    assert [task["id"] for task in stuck] == [running]
    clock.advance(minutes=45)  # the review task has waited more than an hour too
    stuck = client.get("/api/agent/pipeline-status").json["attention"]["stuck"]
    assert sorted(task["id"] for task in stuck) == sorted([running, waiting])


@pytest.mark.parametrize("path", ["/api/agent/tasks/count", "/api/agent/tasks/attention",
                                  "/api/agent/pipeline-status"])
def test_views_are_not_tasks(client, path) -> None:
    assert client.get(path).status_code == 200
