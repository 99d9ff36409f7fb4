"""GET /api/agent/metrics and the records PATCH leaves behind (the seed's acceptance tests)."""
from __future__ import annotations

from pathlib import Path

import pytest

from app.clock import isoformat
from tests.support import reference
from tests.support.stores import stored_records
from tests.support import open_app

SEED_SHAPE = {
    "success_rate": {"completed", "failed", "total", "rate"},
    "execution_time": {"p50_seconds", "p95_seconds"},
}


def new_task(client, task_type: str = "spec") -> str:
    body = {"direction": "d", "task_type": task_type}
    return client.post("/api/agent/tasks", json=body).json["id"]


def finish(client, status: str, *, task_type: str = "impl", **patch) -> str:
    task_id = new_task(client, task_type)
    response = client.patch(f"/api/agent/tasks/{task_id}", json={"status": status, **patch})
    assert response.status_code == 200, response.json
    return task_id


def stored(logs_dir: Path) -> list[dict]:
    return stored_records(logs_dir)


@pytest.mark.parametrize("status", ["completed", "failed"])
def test_patch_to_final_status_appends_one_record(client, logs_dir, status, clock) -> None:
    task_id = finish(client, status, task_type="review", duration_seconds=42.5, output="ok")
    [record] = stored(logs_dir)
    assert record == {"task_id": task_id, "task_type": "review",
                      "model": "ollama/glm-4.7-flash:latest", "duration_seconds": 42.5,
                      "status": status, "created_at": isoformat(clock())}


@pytest.mark.parametrize("status", ["running", "needs_decision"])
def test_other_statuses_record_nothing(client, logs_dir, status) -> None:
    task_id = new_task(client)
    change = {"status": status, "decision_prompt": "which way?"} if status == "needs_decision" \
        else {"status": status}
    assert client.patch(f"/api/agent/tasks/{task_id}", json=change).status_code == 200
    assert stored(logs_dir) == []


def test_duration_defaults_to_time_since_running(client, logs_dir, clock) -> None:
    task_id = new_task(client)
    clock.advance(seconds=30)
    client.patch(f"/api/agent/tasks/{task_id}", json={"status": "running"})
    clock.advance(seconds=12.25)
    client.patch(f"/api/agent/tasks/{task_id}", json={"status": "completed"})
    never_ran = new_task(client)
    clock.advance(seconds=5)
    client.patch(f"/api/agent/tasks/{never_ran}", json={"status": "failed"})
    assert [r["duration_seconds"] for r in stored(logs_dir)] == [12.25, 5]


def test_response_shape(client) -> None:
    finish(client, "completed", duration_seconds=3)
    response = client.get("/api/agent/metrics")
    assert response.status_code == 200
    body = response.json
    for key, fields in SEED_SHAPE.items():
        assert fields <= set(body[key])
    assert body["by_task_type"]["impl"].keys() >= {"count", "completed", "failed", "success_rate"}
    assert body["by_model"]["ollama/glm-4.7-flash:latest"].keys() >= {"count", "avg_duration"}
    assert body["window_days"] == 7


def test_zeroed_structure_without_records(client) -> None:
    body = client.get("/api/agent/metrics").json
    assert body["success_rate"] == {"completed": 0, "failed": 0, "total": 0, "rate": 0.0}
    assert body["execution_time"]["p50_seconds"] == 0
    assert body["execution_time"]["p95_seconds"] == 0
    assert body["by_task_type"] == {} and body["by_model"] == {}


def test_only_records_in_the_window_count(client, logs_dir, clock) -> None:
    finish(client, "failed", task_type="spec", duration_seconds=100)
    clock.advance(days=6)
    finish(client, "completed", duration_seconds=10)
    finish(client, "completed", duration_seconds=20)
    assert client.get("/api/agent/metrics").json["success_rate"]["total"] == 3
    clock.advance(days=1, seconds=1)
    body = client.get("/api/agent/metrics").json
    assert body["success_rate"] == {"completed": 2, "failed": 0, "total": 2, "rate": 1.0}
    assert body["execution_time"]["p95_seconds"] == 20
    assert "spec" not in body["by_task_type"]
    assert client.get("/api/agent/metrics?window_days=30").json["success_rate"]["total"] == 3
    for days in (1, 7, 30):
        answer = client.get(f"/api/agent/metrics?window_days={days}").json
        expected = reference.aggregates(stored_records(logs_dir),
                                        clock(), days)
        assert reference.comparable(answer) == expected


def test_window_days_from_configuration(logs_dir, clock) -> None:
    app = open_app({"AGENT_LOGS_DIR": str(logs_dir), "CLOCK": clock, "METRICS_WINDOW_DAYS": 1})
    assert app.test_client().get("/api/agent/metrics").json["window_days"] == 1


@pytest.mark.parametrize("value", ["0", "366", "-1", "abc", "1.5", ""])
def test_bad_window_days_is_422(client, value) -> None:
    response = client.get(f"/api/agent/metrics?window_days={value}")
    assert response.status_code == 422
    assert "window_days" in response.json["errors"]


@pytest.mark.backend("jsonl")
def test_hand_written_and_corrupt_lines(client, logs_dir, clock) -> None:
    path = logs_dir / "metrics.jsonl"
    path.write_text(
        '{"task_id": "h1", "task_type": "test", "model": "hand/made", "duration_seconds": 8,'
        f' "status": "completed", "created_at": "{clock().isoformat()}"}}\n'
        "{{{ not json\n"
        '{"task_id": "h2", "task_type": "test", "model": "hand/made", "duration_seconds": 2,'
        f' "status": "failed", "created_at": "{clock().isoformat()}"}}\n'
        '{"task_id": "torn", "task_type": "te'
    )
    body = client.get("/api/agent/metrics").json
    assert {model: {key: entry[key] for key in ("count", "avg_duration")}
            for model, entry in body["by_model"].items()} == {
        "hand/made": {"count": 2, "avg_duration": 5.0}}
    # Hand-written lines without usage: their sums are unknown, not 0.
    assert body["by_model"]["hand/made"] == {
        "count": 2, "avg_duration": 5.0, "cost_usd": None, "input_tokens": None,
        "output_tokens": None}
    finish(client, "completed", duration_seconds=1)
    body = client.get("/api/agent/metrics").json
    assert body["success_rate"]["total"] == 3
