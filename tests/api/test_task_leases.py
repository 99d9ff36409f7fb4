"""Claims under leases: POST /tasks/claim, heartbeats, expiry, attempts."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from flask import Flask

from app.services.task_leases import LOST_NOTE
from tests.support import FakeClock, GunicornServer, open_app
from tests.support.stores import stored_records

CLAIM = "/api/agent/tasks/claim"


def create(client, task_type: str = "spec") -> str:
    response = client.post("/api/agent/tasks", json={"direction": "d", "task_type": task_type})
    assert response.status_code == 201
    return response.json["id"]


def claim(client, runner_id: str, **body):
    return client.post(CLAIM, json={"runner_id": runner_id, **body})


def patch(client, task_id: str, **body):
    return client.patch(f"/api/agent/tasks/{task_id}", json=body)


def records(logs_dir: Path) -> list[dict]:
    return stored_records(logs_dir)


def test_claims_take_the_oldest_pending_task_of_the_asked_types(client, clock) -> None:
    assert claim(client, "r1").status_code == 204
    first = create(client, "spec")
    clock.advance(seconds=1)
    second = create(client, "impl")
    clock.advance(seconds=1)
    third = create(client, "spec")
    by_type = claim(client, "r1", task_types=["impl"], lease_seconds=60)
    assert by_type.status_code == 200
    assert by_type.json["id"] == second and by_type.json["status"] == "running"
    assert by_type.json["runner_id"] == "r1" and by_type.json["attempts"] == 1
    assert by_type.json["lease_expires_at"] == "2026-03-01T12:01:02.000000+00:00"
    assert by_type.json["command"]
    assert claim(client, "r2").json["id"] == first
    assert claim(client, "r3").json["id"] == third
    assert claim(client, "r4").status_code == 204


def test_a_repeated_claim_returns_the_task_the_runner_holds(client, clock) -> None:
    task_id = create(client)
    clock.advance(seconds=1)
    create(client)
    assert claim(client, "r1").json["id"] == task_id
    again = claim(client, "r1")
    assert again.json["id"] == task_id and again.json["attempts"] == 1


@pytest.mark.parametrize("body", [{}, {"runner_id": ""}, {"runner_id": "r", "lease_seconds": 4},
                                  {"runner_id": "r", "lease_seconds": 3601},
                                  {"runner_id": "r", "task_types": ["docs"]},
                                  {"runner_id": "r", "extra": 1}])
def test_bad_claims_are_422(client, body) -> None:
    assert client.post(CLAIM, json=body).status_code == 422


def test_only_the_holder_may_patch_and_its_heartbeat_renews(client, clock) -> None:
    task_id = create(client)
    claim(client, "r1", lease_seconds=60)
    assert patch(client, task_id, runner_id="r2", status="completed").status_code == 409
    assert patch(client, task_id, runner_id="r2").status_code == 409
    clock.advance(seconds=50)
    beat = patch(client, task_id, runner_id="r1")
    assert beat.status_code == 200 and beat.json["lease_expires_at"].startswith(
        "2026-03-01T12:01:50")
    assert patch(client, task_id, runner_id="r1", status="running").status_code == 200
    clock.advance(seconds=50)  # past the first lease, within the renewed one
    assert client.get(f"/api/agent/tasks/{task_id}").json["status"] == "running"
    assert patch(client, task_id, status="running").status_code == 409
    done = patch(client, task_id, runner_id="r1", status="completed", duration_seconds=4.5)
    assert done.status_code == 200 and done.json["lease_expires_at"] is None
    again = patch(client, task_id, runner_id="r1", status="completed", duration_seconds=4.5)
    assert again.status_code == 200
    assert patch(client, task_id, runner_id="r1", status="failed").status_code == 409
    assert patch(client, task_id, runner_id="r1").status_code == 409
    assert patch(client, task_id).status_code == 422


def test_an_expired_lease_hands_the_task_back_then_fails_it(
    app: Flask, clock, logs_dir: Path
) -> None:
    client = app.test_client()
    task_id = create(client)
    for attempt in range(1, 4):
        claimed = claim(client, f"runner-{attempt}", lease_seconds=10)
        assert claimed.json["id"] == task_id and claimed.json["attempts"] == attempt
        clock.advance(seconds=11)
        if attempt < 3:
            task = client.get(f"/api/agent/tasks/{task_id}").json
            assert task["status"] == "pending" and task["lease_expires_at"] is None
    assert claim(client, "runner-4").status_code == 204
    # the last attempt's lease, found out, is renewed once for its runner: a grace lease
    task = client.get(f"/api/agent/tasks/{task_id}").json
    assert (task["status"], task["runner_id"]) == ("running", "runner-3")
    assert task["lease_expires_at"] == "2026-03-01T12:00:43.000000+00:00"
    assert records(logs_dir) == []
    clock.advance(seconds=10)
    task = client.get(f"/api/agent/tasks/{task_id}").json
    assert task["status"] == "failed" and task["output"] == LOST_NOTE
    assert task["attempts"] == 3
    [record] = records(logs_dir)
    assert record["task_id"] == task_id and record["status"] == "failed"
    # the last attempt's run time: its claim, 21 s before its grace lease ran out too
    assert record["duration_seconds"] == task["duration_seconds"] == 21


def test_a_late_report_is_taken_while_no_one_else_holds_the_task(
    client, clock, logs_dir
) -> None:
    task_id = create(client)
    claim(client, "r1", lease_seconds=10)
    clock.advance(seconds=30)
    late = patch(client, task_id, runner_id="r1", status="completed", duration_seconds=29)
    assert late.status_code == 200 and late.json["status"] == "completed"
    assert [r["duration_seconds"] for r in records(logs_dir)] == [29]

    other = create(client)
    claim(client, "r1", lease_seconds=10)
    clock.advance(seconds=30)
    assert claim(client, "r2").json["id"] == other
    assert patch(client, other, runner_id="r1", status="completed").status_code == 409


def test_a_person_claims_without_a_lease(client, clock) -> None:
    task_id = create(client)
    claimed = patch(client, task_id, status="running")
    assert claimed.status_code == 200 and claimed.json["lease_expires_at"] is None
    clock.advance(days=30)
    assert client.get(f"/api/agent/tasks/{task_id}").json["status"] == "running"


def test_max_attempts_setting(logs_dir: Path) -> None:
    clock = FakeClock()
    app = open_app({"AGENT_LOGS_DIR": str(logs_dir), "CLOCK": clock, "AGENT_FSYNC": False,
                    "AGENT_MAX_ATTEMPTS": 1})
    client = app.test_client()
    task_id = create(client)
    claim(client, "r1", lease_seconds=5)
    clock.advance(seconds=6)
    assert client.get("/api/agent/tasks?status=running").json["total"] == 1  # its grace
    clock.advance(seconds=5)
    assert client.get("/api/agent/tasks?status=failed").json["total"] == 1
    assert client.get(f"/api/agent/tasks/{task_id}").json["attempts"] == 1


def test_no_two_claims_get_the_same_task_across_gunicorn_workers(logs_dir: Path) -> None:
    server = GunicornServer(logs_dir, workers=3, env={"AGENT_FSYNC": "0"}).start()
    base = f"{server.base_url}/api/agent"
    try:
        created = {requests.post(f"{base}/tasks", json={"direction": f"t{n}", "task_type": "impl"},
                                 timeout=30).json()["id"] for n in range(40)}

        def claim_all(runner: int) -> list[str]:
            got = []
            for _ in range(40):
                answer = requests.post(f"{base}/tasks/claim", timeout=30,
                                       json={"runner_id": f"runner-{runner}"})
                if answer.status_code == 204:
                    return got
                got.append(answer.json()["id"])
                finished = requests.patch(f"{base}/tasks/{got[-1]}", timeout=30, json={
                    "runner_id": f"runner-{runner}", "status": "completed"})
                assert finished.status_code == 200
            return got

        with ThreadPoolExecutor(8) as pool:
            claimed = [task for got in pool.map(claim_all, range(8)) for task in got]
    finally:
        server.stop()
    assert sorted(claimed) == sorted(created)
    assert len(records(logs_dir)) == 40


def test_a_late_heartbeat_takes_the_task_back_while_no_one_else_has(client, clock) -> None:
    task_id = create(client)
    claim(client, "r1", lease_seconds=10)
    clock.advance(seconds=11)
    assert client.get(f"/api/agent/tasks/{task_id}").json["status"] == "pending"
    beat = patch(client, task_id, runner_id="r1", progress_pct=50)
    assert beat.status_code == 200
    assert (beat.json["status"], beat.json["runner_id"], beat.json["attempts"]) == (
        "running", "r1", 1)
    assert beat.json["lease_expires_at"] == "2026-03-01T12:00:21.000000+00:00"
    clock.advance(seconds=11)
    assert claim(client, "r2").json["id"] == task_id
    assert patch(client, task_id, runner_id="r1").status_code == 409


def test_the_same_needs_decision_report_twice(client) -> None:
    task_id = create(client)
    claim(client, "r1")
    body = {"runner_id": "r1", "status": "needs_decision", "decision_prompt": "ship it?"}
    assert patch(client, task_id, **body).status_code == 200
    again = patch(client, task_id, **body)
    assert again.status_code == 200 and again.json["status"] == "needs_decision"
    assert patch(client, task_id, runner_id="r2", **{
        k: v for k, v in body.items() if k != "runner_id"}).status_code == 409


def test_the_last_attempts_late_report_is_taken_after_an_outage(
    logs_dir: Path, clock
) -> None:
    """One attempt each, leases of 6 s, the service gone for 15 s: the first request
    after (another runner's claim) finds both leases out. Each runner still holds its
    task for one more lease: a report in that time is taken; without one, the task
    ends failed; either way with exactly one record."""
    client = open_app({"AGENT_LOGS_DIR": str(logs_dir), "CLOCK": clock, "AGENT_FSYNC": False,
                       "AGENT_MAX_ATTEMPTS": 1}).test_client()
    for _ in range(3):
        create(client)
    reported, silent, direct = (claim(client, runner, lease_seconds=6).json["id"]
                                for runner in ("r1", "r2", "r3"))
    clock.advance(seconds=15)
    # the first request after the outage: a report, taken at once
    assert patch(client, direct, runner_id="r3", status="completed").status_code == 200
    assert claim(client, "r9").status_code == 204
    assert patch(client, reported, runner_id="r9", status="failed").status_code == 409
    clock.advance(seconds=2)
    late = patch(client, reported, runner_id="r1", status="completed", duration_seconds=9)
    assert late.status_code == 200 and late.json["status"] == "completed"
    clock.advance(seconds=4)  # r2's grace lease runs out: its task ends failed
    lost = client.get(f"/api/agent/tasks/{silent}").json
    assert (lost["status"], lost["output"], lost["attempts"]) == ("failed", LOST_NOTE, 1)
    assert patch(client, silent, runner_id="r2", status="completed").status_code == 409
    ended = {(reported, "completed", 9), (direct, "completed", 15), (silent, "failed", 21)}
    kept = [(r["task_id"], r["status"], r["duration_seconds"]) for r in records(logs_dir)]
    assert len(kept) == 3 and set(kept) == ended


def test_a_heartbeat_in_the_grace_lease_makes_it_an_ordinary_lease(
    logs_dir: Path, clock
) -> None:
    client = open_app({"AGENT_LOGS_DIR": str(logs_dir), "CLOCK": clock, "AGENT_FSYNC": False,
                       "AGENT_MAX_ATTEMPTS": 1}).test_client()
    task_id = create(client)
    claim(client, "r1", lease_seconds=10)
    clock.advance(seconds=30)
    beat = patch(client, task_id, runner_id="r1", progress_pct=10)
    assert beat.status_code == 200 and beat.json["status"] == "running"
    assert beat.json["lease_expires_at"] == "2026-03-01T12:00:40.000000+00:00"
    clock.advance(seconds=11)  # lost again: a grace lease again, then the end
    assert client.get(f"/api/agent/tasks/{task_id}").json["status"] == "running"
    clock.advance(seconds=10)
    assert client.get(f"/api/agent/tasks/{task_id}").json["status"] == "failed"
    assert [r["status"] for r in records(logs_dir)] == ["failed"]
