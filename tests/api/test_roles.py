"""Scoped tokens: each role may do what its route allows and no more, a ``run`` token acts
only as its own runners, and the token file is re-read when it changes."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.access.roles import OPEN_ENDPOINTS, ROLES, ROUTE_ROLES
from app.access.token_file import TokenFileEditor, digest
from app.shared_settings import ConfigError
from tests.api.test_access import every_route
from tests.support import open_app

LEGACY_TOKEN = "legacy-admin-token-0123456789"


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    return tmp_path / "tokens.json"


@pytest.fixture
def secrets(tokens_file: Path) -> dict[str, str]:
    """A token of each role, named after it (and ``other-run``, a second runner host)."""
    editor = TokenFileEditor(tokens_file)
    return {name: editor.add(name, name.removeprefix("other-"))
            for name in (*ROLES, "other-run")}


@pytest.fixture
def scoped(logs_dir: Path, clock, tokens_file: Path, secrets: dict[str, str]) -> Flask:
    return open_app({"TESTING": True, "AGENT_LOGS_DIR": str(logs_dir), "CLOCK": clock,
                     "AGENT_FSYNC": False, "AGENT_API_TOKENS_FILE": str(tokens_file),
                     "AGENT_API_TOKEN": LEGACY_TOKEN})


class As:
    """A test client that sends one token."""

    def __init__(self, client: FlaskClient, secret: str) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {secret}"}

    def __getattr__(self, method: str):
        return lambda url, **kwargs: self.client.open(url, method=method.upper(),
                                                      headers=self.headers, **kwargs)


def clients(app: Flask, secrets: dict[str, str]) -> dict[str, As]:
    client = app.test_client()
    return {name: As(client, secret) for name, secret in secrets.items()}


def test_every_route_has_a_role_decision(app: Flask) -> None:
    """A new route must be added to ROUTE_ROLES (or OPEN_ENDPOINTS) to pass."""
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    undecided = endpoints - set(ROUTE_ROLES) - OPEN_ENDPOINTS
    assert not undecided, f"routes without a role decision: {sorted(undecided)}"
    assert not (set(ROUTE_ROLES) | OPEN_ENDPOINTS) - endpoints, "decisions for no route"
    assert all(roles <= set(ROLES) for roles in ROUTE_ROLES.values())


def test_each_role_reaches_exactly_the_routes_that_allow_it(
        scoped: Flask, secrets: dict[str, str]) -> None:
    callers = clients(scoped, secrets)
    for endpoint, method, url in every_route(scoped):
        if endpoint in OPEN_ENDPOINTS:
            continue
        for role in ROLES:
            answer = getattr(callers[role], method.lower())(url, json={})
            answer.close()  # a streamed export left open warns when collected
            if role in ROUTE_ROLES[endpoint]:
                assert answer.status_code not in (401, 403), (role, method, url, answer.json)
            else:
                assert answer.status_code == 403, (role, method, url)
                least = next(needed for needed in ROLES if needed in ROUTE_ROLES[endpoint])
                assert f"role {least}" in answer.json["detail"], answer.json


def test_a_route_added_without_a_decision_is_for_admin_only(
        scoped: Flask, secrets: dict[str, str]) -> None:
    scoped.add_url_rule("/added-later", "added_later", lambda: "added")
    callers = clients(scoped, secrets)
    assert callers["admin"].get("/added-later").status_code == 200
    for role in ("read", "run", "submit"):
        assert callers[role].get("/added-later").status_code == 403


def test_the_legacy_token_means_admin(scoped: Flask) -> None:
    legacy = As(scoped.test_client(), LEGACY_TOKEN)
    assert legacy.get("/api/whoami").json == {"name": "api-token", "role": "admin"}
    assert legacy.post("/api/agent/tasks", json={"direction": "d", "task_type": "impl"}
                       ).status_code == 201
    assert legacy.post("/api/agent/tasks/claim", json={"runner_id": "anywhere"}
                       ).status_code == 200


def test_whoami_names_the_token(scoped: Flask, secrets: dict[str, str]) -> None:
    for name, caller in clients(scoped, secrets).items():
        assert caller.get("/api/whoami").json == {"name": name,
                                                  "role": name.removeprefix("other-")}
    assert scoped.test_client().get("/api/whoami").status_code == 401


def test_without_tokens_whoami_answers_admin(client: FlaskClient) -> None:
    assert client.get("/api/whoami").json == {"name": None, "role": "admin"}


def _created(callers: dict[str, As]) -> str:
    answer = callers["submit"].post("/api/agent/tasks",
                                    json={"direction": "do it", "task_type": "impl"})
    assert answer.status_code == 201, answer.json
    return answer.json["id"]


def test_a_run_token_acts_only_as_its_own_runners(scoped: Flask,
                                                  secrets: dict[str, str]) -> None:
    callers = clients(scoped, secrets)
    run, other = callers["run"], callers["other-run"]
    task_id = _created(callers)
    refused = run.post("/api/agent/tasks/claim", json={"runner_id": "other-run/1"})
    assert refused.status_code == 403 and "'run/'" in refused.json["detail"]
    assert run.post("/api/agent/tasks/claim", json={"runner_id": "runner-1"}
                    ).status_code == 403
    claimed = run.post("/api/agent/tasks/claim", json={"runner_id": "run/1"})
    assert claimed.status_code == 200 and claimed.json["id"] == task_id
    url = f"/api/agent/tasks/{task_id}"
    # Another host cannot heartbeat as this runner, nor finish its task without a runner id.
    assert other.patch(url, json={"runner_id": "run/1"}).status_code == 403
    assert other.patch(url, json={"runner_id": "other-run/1", "status": "completed",
                                  "duration_seconds": 1}).status_code == 409
    assert other.patch(url, json={"status": "completed"}).status_code == 403
    assert run.patch(url, json={"status": "completed"}).status_code == 403
    assert other.get(url).status_code == 403
    assert run.get(url).status_code == 200
    assert run.get("/api/agent/tasks").status_code == 403
    done = run.patch(url, json={"runner_id": "run/1", "status": "completed",
                                "duration_seconds": 1.5})
    assert done.status_code == 200 and done.json["status"] == "completed"
    assert callers["read"].get(url).json["status"] == "completed"


def test_submit_decides_and_cannot_act_as_a_runner(scoped: Flask,
                                                   secrets: dict[str, str]) -> None:
    callers = clients(scoped, secrets)
    submit = callers["submit"]
    task_id = _created(callers)
    url = f"/api/agent/tasks/{task_id}"
    assert submit.post("/api/agent/tasks/claim", json={"runner_id": "submit/1"}
                       ).status_code == 403
    callers["run"].post("/api/agent/tasks/claim", json={"runner_id": "run/1"})
    assert submit.patch(url, json={"runner_id": "run/1"}).status_code == 403
    asked = callers["run"].patch(url, json={"runner_id": "run/1", "status": "needs_decision",
                                            "decision_prompt": "which way?"})
    assert asked.status_code == 200, asked.json
    assert callers["read"].patch(url, json={"decision": "left"}).status_code == 403
    assert callers["run"].patch(url, json={"decision": "left"}).status_code == 403
    answered = submit.patch(url, json={"decision": "left"})
    assert answered.status_code == 200 and answered.json["decision"] == "left"


def test_a_new_token_works_and_a_revoked_one_stops_without_a_restart(
        scoped: Flask, tokens_file: Path) -> None:
    client = scoped.test_client()
    editor = TokenFileEditor(tokens_file)
    secret = editor.add("late", "read")
    late = As(client, secret)
    assert late.get("/api/agent/tasks").status_code == 200
    assert editor.revoke("late")
    assert late.get("/api/agent/tasks").status_code == 401
    assert not editor.revoke("late")


def test_a_malformed_new_version_keeps_the_old_tokens(
        scoped: Flask, tokens_file: Path, secrets: dict[str, str],
        caplog: pytest.LogCaptureFixture) -> None:
    reader = As(scoped.test_client(), secrets["read"])
    assert reader.get("/api/agent/tasks").status_code == 200
    tokens_file.write_text('{"tokens": [{"name": "x", "role": "root", "sha256": "00"}]}')
    os.utime(tokens_file, ns=(1, 1))
    with caplog.at_level(logging.ERROR):
        assert reader.get("/api/agent/tasks").status_code == 200
    assert "malformed" in caplog.text and "stay in use" in caplog.text


@pytest.mark.parametrize("text", [
    "not json", '{"tokens": {}}', '{"tokens": [{"name": "a", "role": "root", "sha256": ""}]}',
    json.dumps({"tokens": [{"name": "a", "role": "read", "sha256": digest("x")}] * 2}),
])
def test_a_malformed_file_stops_the_start(logs_dir: Path, tokens_file: Path,
                                          text: str) -> None:
    tokens_file.write_text(text)
    with pytest.raises(ConfigError, match="AGENT_API_TOKENS_FILE .* is malformed"):
        open_app({"AGENT_LOGS_DIR": str(logs_dir), "AGENT_API_TOKENS_FILE": str(tokens_file)})


def test_only_hashes_are_stored(tokens_file: Path, secrets: dict[str, str]) -> None:
    stored = tokens_file.read_text()
    assert all(secret not in stored for secret in secrets.values())
    assert {entry["sha256"] for entry in json.loads(stored)["tokens"]} == {
        digest(secret) for secret in secrets.values()}
    assert tokens_file.stat().st_mode & 0o077 == 0


def test_a_file_set_but_missing_refuses_every_token(logs_dir: Path, tmp_path: Path) -> None:
    app = open_app({"AGENT_LOGS_DIR": str(logs_dir),
                    "AGENT_API_TOKENS_FILE": str(tmp_path / "absent.json")})
    stranger = As(app.test_client(), "anything-at-all-123")
    assert stranger.get("/api/agent/tasks").status_code == 401


def test_health_tells_where_the_stores_are_only_to_readers(
        scoped: Flask, secrets: dict[str, str]) -> None:
    anonymous = scoped.test_client().get("/api/health")
    assert anonymous.status_code == 200 and anonymous.json == {"status": "ok"}
    callers = clients(scoped, secrets)
    assert set(callers["read"].get("/api/health").json["stores"]) == {"metrics", "tasks"}
    assert "stores" not in callers["run"].get("/api/health").json
    stranger = As(scoped.test_client(), "wrong-token-0123456789")
    assert stranger.get("/api/health").json == {"status": "ok"}


def test_each_task_shows_who_created_decided_and_cancelled_it(
        scoped: Flask, secrets: dict[str, str]) -> None:
    callers = clients(scoped, secrets)
    task_id = _created(callers)
    url = f"/api/agent/tasks/{task_id}"
    callers["run"].post("/api/agent/tasks/claim", json={"runner_id": "run/1"})
    callers["run"].patch(url, json={"runner_id": "run/1", "status": "needs_decision",
                                    "decision_prompt": "which way?"})
    callers["admin"].patch(url, json={"decision": "left"})
    cancelled = callers["submit"].post(f"{url}/cancel", json={"reason": "not needed"})
    assert cancelled.status_code == 200, cancelled.json
    shown = callers["read"].get(url).json
    assert (shown["created_by"], shown["decided_by"], shown["cancelled_by"]) == (
        "submit", "admin", "submit")
    rerun = callers["admin"].post(f"{url}/rerun")
    assert rerun.json["created_by"] == "admin" and rerun.json["decided_by"] is None


def test_a_run_token_changes_only_tasks_its_runner_holds(
        scoped: Flask, secrets: dict[str, str], clock) -> None:
    """A runner takes a task by claiming it: under a run token, reporting, starting or
    heartbeating a task its runner never claimed is refused, whatever its status."""
    callers = clients(scoped, secrets)
    run, other = callers["run"], callers["other-run"]
    pending = f"/api/agent/tasks/{_created(callers)}"
    for change in ({"status": "completed", "duration_seconds": 1}, {"status": "running"},
                   {"status": "cancelled"}, {}):
        refused = other.patch(pending, json={"runner_id": "other-run/1", **change})
        assert refused.status_code == 409, (change, refused.json)
    clock.advance(seconds=1)  # claims take the older task first
    asked = f"/api/agent/tasks/{_created(callers)}"
    assert run.post("/api/agent/tasks/claim", json={"runner_id": "run/1"}).status_code == 200
    assert run.patch(pending, json={"runner_id": "run/1", "status": "needs_decision",
                                    "decision_prompt": "which way?"}).status_code == 200
    assert other.patch(pending, json={"runner_id": "other-run/1", "status": "cancelled"}
                       ).status_code == 409
    assert callers["read"].get(pending).json["status"] == "needs_decision"
    assert callers["read"].get(asked).json["status"] == "pending"
    assert callers["admin"].patch(asked, json={"runner_id": "anyone", "status": "running"}
                                  ).status_code == 200


def test_head_follows_get_and_options_only_tells_the_methods(
        scoped: Flask, secrets: dict[str, str]) -> None:
    callers = clients(scoped, secrets)
    assert callers["read"].head("/api/agent/tasks").status_code == 200
    assert callers["run"].head("/api/agent/tasks").status_code == 403
    told = callers["read"].options("/api/agent/tasks")
    assert told.status_code == 200 and {"GET", "POST"} <= set(told.headers["Allow"].split(", "))
    assert callers["read"].options("/api/agent/tasks/claim").data == b""
    assert scoped.test_client().options("/api/agent/tasks").status_code == 401
