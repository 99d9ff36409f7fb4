"""The task API over the Flask test client: shapes, transitions, routing, bad input."""
from __future__ import annotations

import itertools
import json
import shlex
from pathlib import Path

import pytest

from app.models.agent import STATUSES
from app.services.routing import RoutingError, load_routing
from app.services.task_service import TRANSITIONS
from tests.support import open_app
from tests.support.stores import stored_records

TASK_FIELDS = {"id", "direction", "task_type", "status", "model", "command", "context",
               "output", "created_at", "updated_at"}


def create(client, **body):
    body = {"direction": "write the spec", "task_type": "spec", **body}
    response = client.post("/api/agent/tasks", json=body)
    assert response.status_code == 201, response.json
    return response.json


def change(status: str) -> dict:
    """A PATCH body moving a task to ``status`` (needs_decision needs its prompt)."""
    prompt = {"decision_prompt": "which way?"} if status == "needs_decision" else {}
    return {"status": status, **prompt}


def put_in_status(client, status: str) -> str:
    """A task in ``status``, reached by legal moves."""
    task_id = create(client)["id"]
    if status != "pending":
        response = client.patch(f"/api/agent/tasks/{task_id}", json=change(status))
        assert response.status_code == 200
    return task_id


def test_create_returns_the_task(client) -> None:
    task = create(client, context={"repo": "x"})
    assert TASK_FIELDS <= set(task)
    assert task["status"] == "pending" and task["output"] is None
    assert task["context"] == {"repo": "x"}
    assert task["model"] == "ollama/glm-4.7-flash:latest"
    assert task["created_at"].endswith("+00:00")
    assert client.get(f"/api/agent/tasks/{task['id']}").json == task


def test_list_filters_newest_first_and_counts_before_limit(client, clock) -> None:
    ids = []
    for n in range(5):
        ids.append(create(client, task_type="impl" if n % 2 else "spec")["id"])
        clock.advance(seconds=1)
    listing = client.get("/api/agent/tasks?limit=2").json
    assert [t["id"] for t in listing["tasks"]] == ids[::-1][:2] and listing["total"] == 5
    oldest = client.get("/api/agent/tasks?limit=3&order=oldest").json
    assert [t["id"] for t in oldest["tasks"]] == ids[:3] and oldest["total"] == 5
    impl = client.get("/api/agent/tasks?task_type=impl").json
    assert [t["id"] for t in impl["tasks"]] == [ids[3], ids[1]] and impl["total"] == 2
    client.patch(f"/api/agent/tasks/{ids[0]}", json={"status": "running"})
    running = client.get("/api/agent/tasks?status=running").json
    assert [t["id"] for t in running["tasks"]] == [ids[0]]


@pytest.mark.parametrize("query", ["status=done", "task_type=docs", "limit=0", "limit=501",
                                   "limit=abc", "limit=2.5", "order=random"])
def test_list_rejects_bad_query(client, query) -> None:
    response = client.get(f"/api/agent/tasks?{query}")
    assert response.status_code == 422
    assert response.json["detail"] and response.json["errors"]


def test_unknown_task_is_404(client) -> None:
    assert client.get("/api/agent/tasks/nope").status_code == 404
    response = client.patch("/api/agent/tasks/nope", json={"status": "running"})
    assert response.status_code == 404 and "nope" in response.json["detail"]


@pytest.mark.parametrize("start,target", list(itertools.product(STATUSES, STATUSES)))
def test_transition_table(client, start, target, logs_dir: Path) -> None:
    task_id = put_in_status(client, start)
    response = client.patch(f"/api/agent/tasks/{task_id}", json=change(target))
    legal = target in TRANSITIONS[start]
    assert response.status_code == (200 if legal else 409), response.json
    assert client.get(f"/api/agent/tasks/{task_id}").json["status"] == (target if legal else start)
    recorded = [record["task_id"] for record in stored_records(logs_dir)].count(task_id)
    final = ("completed", "failed")
    assert recorded == int(start in final or (legal and target in final))


def test_running_twice_is_a_conflict(client) -> None:
    task_id = put_in_status(client, "running")
    response = client.patch(f"/api/agent/tasks/{task_id}", json={"status": "running"})
    assert response.status_code == 409 and response.json["detail"]


@pytest.mark.parametrize("body,field", [
    ({"task_type": "spec"}, "direction"),
    ({"direction": "", "task_type": "spec"}, "direction"),
    ({"direction": "   ", "task_type": "spec"}, "direction"),
    ({"direction": 5, "task_type": "spec"}, "direction"),
    ({"direction": "x", "task_type": "docs"}, "task_type"),
    ({"direction": "x"}, "task_type"),
    ({"direction": "x", "task_type": "spec", "context": [1]}, "context"),
    ({"direction": "x", "task_type": "spec", "context": None}, "context"),
    ({"direction": "x", "task_type": "spec", "context": {"model_override": 3}}, "context"),
    ({"direction": "x", "task_type": "spec", "extra": 1}, "extra"),
])
def test_create_rejects_invalid_fields(client, body, field) -> None:
    response = client.post("/api/agent/tasks", json=body)
    assert response.status_code == 422
    assert field in response.json["errors"]
    assert client.get("/api/agent/tasks").json["total"] == 0


@pytest.mark.parametrize("body", [
    {"status": "done"}, {}, {"status": "completed", "duration_seconds": -1},
    {"status": "completed", "duration_seconds": "NaN"}, {"status": "failed", "output": 7},
    {"status": "completed", "duration_seconds": True},
])
def test_patch_rejects_invalid_fields(client, body, logs_dir: Path) -> None:
    task_id = create(client)["id"]
    response = client.patch(f"/api/agent/tasks/{task_id}", json=body)
    assert response.status_code == 422, response.json
    assert client.get(f"/api/agent/tasks/{task_id}").json["status"] == "pending"
    assert stored_records(logs_dir) == []


@pytest.mark.parametrize("data", [b"{bad", b"", b"[1,", b"\xff"])
def test_malformed_json_is_400(client, data) -> None:
    response = client.post("/api/agent/tasks", data=data, content_type="application/json")
    assert response.status_code == 400
    assert response.json["detail"].startswith("Malformed JSON")


def test_non_object_body_is_422(client) -> None:
    response = client.post("/api/agent/tasks", json=[1, 2])
    assert response.status_code == 422 and response.json["errors"]


def test_unknown_route_and_method_are_json(client) -> None:
    assert client.get("/api/agent/nothing").json["detail"]
    response = client.delete("/api/agent/tasks")
    assert response.status_code == 405 and response.json["detail"]
    assert set(response.headers["Allow"].split(", ")) >= {"GET", "POST"}


def test_route_lists_the_builtin_table(client) -> None:
    impl = client.get("/api/agent/route?task_type=impl").json
    assert impl == {"task_type": "impl", "model": "ollama/glm-4.7-flash:latest",
                    "tier": "local",
                    "command_template":
                        "claude -p --model ollama/glm-4.7-flash:latest -- {direction}"}
    heal = client.get("/api/agent/route?task_type=heal").json
    assert heal["model"] == "claude-3-5-haiku-20241022"
    assert client.get("/api/agent/route?task_type=x").status_code == 422
    assert client.get("/api/agent/route").status_code == 422


def test_routing_file_overrides_entry_by_entry(tmp_path: Path, logs_dir: Path) -> None:
    routing = tmp_path / "routing.json"
    routing.write_text(json.dumps({
        "impl": {"model": "local/tiny", "tier": "test",
                 "command": ["python3", "-c", "print(1)", "my arg", "--", "{direction}"]},
        "heal": {"model": "other"},
    }))
    client = open_app({"AGENT_LOGS_DIR": str(logs_dir),
                       "AGENT_ROUTING_FILE": str(routing)}).test_client()
    route = client.get("/api/agent/route?task_type=impl").json
    assert route == {"task_type": "impl", "model": "local/tiny", "tier": "test",
                     "command_template": "python3 -c 'print(1)' 'my arg' -- {direction}"}
    heal = client.get("/api/agent/route?task_type=heal").json
    assert heal["model"] == "other" and heal["tier"] == "cloud"
    assert client.get("/api/agent/route?task_type=spec").json["model"].startswith("ollama/")


@pytest.mark.parametrize("content,problem", [
    ('{"docs": {"model": "x"}}', "docs: Unknown field."),
    ('{"impl": {"command": []}}', "impl.command: Shorter than minimum length 1."),
    ("[1]", "_schema: Invalid input type."),
    ("{not json", "Expecting property name"),
    ('{"impl": {"model": 3}}', "impl.model: Not a valid string."),
    ('{"models": ["", "x"]}', "models.0: Must not be blank."),
    ('{"spec": {"command": ["cli", "{direction}", "--"]}}', 'entry "spec": {direction} must'),
    ('{"spec": {"command": ["cli", "{decision}", "--", "{direction}"]}}',
     'entry "spec": {decision} must'),
])
def test_a_bad_routing_file_is_one_line_naming_the_problem(
    tmp_path: Path, content: str, problem: str
) -> None:
    routing = tmp_path / "routing.json"
    routing.write_text(content)
    with pytest.raises(RoutingError) as raised:
        load_routing(routing)
    message = str(raised.value)
    assert message.startswith(f"routing file {routing}: ") and problem in message
    assert "\n" not in message and "defaultdict" not in message


def test_tasks_need_the_routing_file_but_metrics_do_not(tmp_path: Path) -> None:
    routing = tmp_path / "routing.json"
    routing.write_text('{"impl": {"command": []}}')
    client = open_app({"AGENT_LOGS_DIR": str(tmp_path), "AGENT_FSYNC": False,
                       "AGENT_ROUTING_FILE": str(routing)}).test_client()
    assert client.get("/api/agent/metrics").status_code == 200
    refused = client.post("/api/agent/tasks", json={"direction": "d", "task_type": "impl"})
    assert refused.status_code == 503 and str(routing) in refused.json["detail"]


@pytest.mark.parametrize("direction", ["it's \"quoted\"; rm -rf / $(whoami) `id`",
                                       "line one\nline two", "-dash"])
def test_command_quotes_the_direction(client, direction) -> None:
    task = create(client, direction=direction, task_type="heal")
    argv = shlex.split(task["command"])
    assert argv == ["claude", "-p", "--model", "claude-3-5-haiku-20241022", "--", direction]


@pytest.fixture
def routed(tmp_path: Path, logs_dir: Path):
    """A client whose routing file lists more models, and has a CLI that takes no --."""
    routing = tmp_path / "routing.json"
    routing.write_text(json.dumps({
        "models": ["cursor/auto"],
        "review": {"model": "local/plain", "accepts_end_of_options": False,
                   "command": ["plain-cli", "{direction}"]},
    }))
    return open_app({"AGENT_LOGS_DIR": str(logs_dir), "AGENT_FSYNC": False,
                     "AGENT_ROUTING_FILE": str(routing)}).test_client()


def test_model_override_changes_model_and_command(routed) -> None:
    task = create(routed, context={"model_override": "cursor/auto"})
    assert task["model"] == "cursor/auto"
    assert shlex.split(task["command"])[3] == "cursor/auto"
    assert create(routed, context={"model_override": "local/plain"})["model"] == "local/plain"


@pytest.mark.parametrize("model", ["--output-file=/tmp/x", "unknown/model", "x" * 60_000])
def test_model_override_must_be_a_model_the_routing_knows(routed, model) -> None:
    response = routed.post("/api/agent/tasks", json={
        "direction": "d", "task_type": "spec", "context": {"model_override": model}})
    assert response.status_code == 422 and "context" in response.json["errors"]
    assert routed.get("/api/agent/tasks").json["total"] == 0


def test_a_cli_without_end_of_options_refuses_directions_that_look_like_options(routed):
    response = routed.post("/api/agent/tasks", json={"direction": "--help me",
                                                     "task_type": "review"})
    assert response.status_code == 422 and "direction" in response.json["errors"]
    task = create(routed, direction="help me", task_type="review")
    assert shlex.split(task["command"]) == ["plain-cli", "help me"]


@pytest.mark.parametrize("damage", [{"started_at": 5}, {"created_at": "soon"},
                                    {"updated_at": None}, {"model": ""}, {"context": []},
                                    {"status": "archived"}])
def test_damaged_task_lines_are_skipped_not_a_500(client, logs_dir: Path, damage) -> None:
    task = create(client)
    with open(logs_dir / "tasks.jsonl", "a") as out:
        out.write(json.dumps({**task, "id": "damaged", **damage}) + "\n")
    assert [t["id"] for t in client.get("/api/agent/tasks").json["tasks"]] == [task["id"]]
    assert client.get("/api/agent/tasks/damaged").status_code == 404
    assert client.patch("/api/agent/tasks/damaged", json={"status": "failed"}).status_code == 404
    assert client.patch(f"/api/agent/tasks/{task['id']}",
                        json={"status": "failed"}).status_code == 200
