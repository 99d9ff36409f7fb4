"""Progress, decisions and the task log over the Flask test client."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

from app.storage.jsonl.task_logs import TaskLogs
from tests.support import open_app


def create(client, task_type: str = "spec") -> str:
    response = client.post("/api/agent/tasks", json={"direction": "d", "task_type": task_type})
    assert response.status_code == 201
    return response.json["id"]


def patch(client, task_id: str, **body):
    return client.patch(f"/api/agent/tasks/{task_id}", json=body)


def test_progress_without_a_status(client) -> None:
    task_id = create(client)
    client.post("/api/agent/tasks/claim", json={"runner_id": "r1"})
    beat = patch(client, task_id, runner_id="r1", progress_pct=40, current_step="compiling",
                 log_append="line 1\n")
    assert beat.status_code == 200
    assert (beat.json["progress_pct"], beat.json["current_step"]) == (40, "compiling")
    by_hand = patch(client, task_id, current_step="waiting for review")
    assert by_hand.status_code == 200 and by_hand.json["progress_pct"] == 40
    assert by_hand.json["status"] == "running" and by_hand.json["runner_id"] == "r1"
    assert patch(client, task_id).status_code == 422
    for bad in ({"progress_pct": 101}, {"progress_pct": -1}, {"current_step": "x" * 501}):
        assert patch(client, task_id, **bad).status_code == 422, bad
    patch(client, task_id, runner_id="r1", status="completed", log_append="line 2\n")
    assert patch(client, task_id, progress_pct=50).status_code == 409


def test_the_log_keeps_what_runners_sent(client) -> None:
    task_id = create(client)
    assert client.get(f"/api/agent/tasks/{task_id}/log").json == {
        "task_id": task_id, "log": "", "command": client.get(
            f"/api/agent/tasks/{task_id}").json["command"], "output": None}
    client.post("/api/agent/tasks/claim", json={"runner_id": "r1"})
    patch(client, task_id, runner_id="r1", log_append="first\n")
    patch(client, task_id, runner_id="r1", status="failed", output="tail", log_append="last\n")
    answer = client.get(f"/api/agent/tasks/{task_id}/log").json
    assert answer["log"] == "first\nlast\n" and answer["output"] == "tail"
    assert client.get("/api/agent/tasks/nope/log").status_code == 404


def test_a_task_log_keeps_the_last_mebibyte(tmp_path: Path) -> None:
    logs = TaskLogs(tmp_path, max_bytes=1000)
    for number in range(300):
        logs.append("t1", f"line {number:04d}\n")
    kept = logs.read("t1")
    assert len(kept.encode()) == 1000 and kept.endswith("line 0299\n")
    logs.append("t2", "é" * 600)  # 1200 bytes: the front cut falls inside a character
    assert logs.read("t2") == "é" * 500
    logs.append("../escape", "kept inside")
    assert logs.read("../escape") == "kept inside"
    assert [path.parent for path in tmp_path.rglob("*.log")] == [tmp_path] * 3


def test_the_decision_loop(tmp_path: Path, logs_dir: Path) -> None:
    routing = tmp_path / "routing.json"
    routing.write_text(json.dumps({"spec": {"command": [
        "agent", "--model", "{model}", "--", "{direction}", "{decision}"]}}))
    client = open_app({"AGENT_LOGS_DIR": str(logs_dir), "AGENT_FSYNC": False,
                       "AGENT_ROUTING_FILE": str(routing)}).test_client()
    task_id = create(client)
    assert shlex.split(client.get(f"/api/agent/tasks/{task_id}").json["command"])[-1] == ""
    client.post("/api/agent/tasks/claim", json={"runner_id": "r1"})
    assert patch(client, task_id, runner_id="r1", status="needs_decision").status_code == 422
    asked = patch(client, task_id, runner_id="r1", status="needs_decision",
                  decision_prompt="ship it?")
    assert asked.status_code == 200 and asked.json["lease_expires_at"] is None
    assert patch(client, task_id, status="pending").status_code == 409
    answered = patch(client, task_id, decision="--yes, ship")
    assert answered.status_code == 200
    assert answered.json["status"] == "pending" and answered.json["decision"] == "--yes, ship"
    assert shlex.split(answered.json["command"])[-2:] == ["d", "--yes, ship"]
    again = client.post("/api/agent/tasks/claim", json={"runner_id": "r2"}).json
    assert again["id"] == task_id and again["decision"] == "--yes, ship"
    assert again["attempts"] == 2
    assert patch(client, task_id, decision="no").status_code == 409
    done = patch(client, task_id, runner_id="r2", status="completed")
    assert done.status_code == 200 and done.json["decision_prompt"] == "ship it?"


def test_compaction_takes_the_logs_of_the_tasks_it_drops(app, client, clock, logs_dir) -> None:
    old, recent = create(client), create(client)
    for task_id in (old, recent):
        patch(client, task_id, status="running")
        patch(client, task_id, log_append=f"output of {task_id}\n")
    patch(client, old, status="completed")
    clock.advance(days=40)
    patch(client, recent, status="completed")
    assert app.extensions["agent"].tasks.compact(30).expired == 1
    assert client.get(f"/api/agent/tasks/{old}/log").status_code == 404
    assert not (logs_dir / "task-logs" / f"{old}.log").exists()
    assert client.get(f"/api/agent/tasks/{recent}/log").json["log"] == f"output of {recent}\n"
