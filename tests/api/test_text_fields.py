"""NUL characters, which PostgreSQL cannot keep: replaced by U+FFFD in free text, refused
(422) in identifiers, the same on both backends."""
from __future__ import annotations

from typing import Any

import pytest
from marshmallow import Schema, fields

from app.models.agent import RoutingFileSchema
from app.models.text import JsonObject, Name, Text
from app.openapi import OPERATIONS
from tests.api.queue_client import TASKS, claim, create, get, patch
from tests.support.stores import stored_records

NUL, KEPT = "\x00", "\ufffd"


def test_a_runners_output_with_nul_is_kept_with_replacement_characters(
    client, logs_dir
) -> None:
    task_id = create(client)["id"]
    claim(client, "r1")
    beat = patch(client, task_id, runner_id="r1", log_append=f"a{NUL}b\n",
                 current_step=f"step{NUL}", progress_pct=50)
    assert beat.status_code == 200, beat.json
    assert beat.json["current_step"] == f"step{KEPT}"
    done = patch(client, task_id, runner_id="r1", status="completed", output=f"out{NUL}",
                 log_append=f"c{NUL}\n", duration_seconds=2)
    assert done.status_code == 200, done.json
    assert (done.json["status"], done.json["output"]) == ("completed", f"out{KEPT}")
    assert client.get(f"{TASKS}/{task_id}/log").json["log"] == f"a{KEPT}b\nc{KEPT}\n"
    assert [record["task_id"] for record in stored_records(logs_dir)] == [task_id]


def test_free_text_of_people_is_kept_with_replacement_characters(client) -> None:
    created = create(client, direction=f"fix{NUL}it",
                     context={"note": f"x{NUL}", "deep": [{"k": f"{NUL}"}], "n": 1})
    assert created["direction"] == f"fix{KEPT}it"
    assert created["context"] == {"note": f"x{KEPT}", "deep": [{"k": KEPT}], "n": 1}
    asking = patch(client, created["id"], status="needs_decision",
                   decision_prompt=f"which{NUL}?")
    assert asking.json["decision_prompt"] == f"which{KEPT}?"
    answered = patch(client, created["id"], decision=f"this{NUL}")
    assert answered.json["decision"] == f"this{KEPT}"
    cancelled = client.post(f"{TASKS}/{created['id']}/cancel", json={"reason": f"no{NUL}"})
    assert cancelled.json["cancel_reason"] == f"no{KEPT}"


@pytest.mark.parametrize("request_args", [
    ("post", f"{TASKS}/claim", {"runner_id": f"r{NUL}1"}),
    ("post", f"{TASKS}/claim", {"runner_id": "r1", "task_types": [f"spec{NUL}"]}),
    ("post", TASKS, {"direction": "d", "task_type": "spec", "context": {f"k{NUL}": 1}}),
    ("post", TASKS, {"direction": "d", "task_type": "spec",
                     "context": {"k": [{f"{NUL}": 1}]}}),
    ("post", TASKS, {"direction": "d", "task_type": "spec",
                     "context": {"model_override": f"claude{NUL}"}}),
    ("get", f"{TASKS}?task_type=spec{NUL}", None),
    ("get", f"/api/agent/metrics/records?model=m{NUL}", None),
    ("get", f"/api/agent/metrics/records?task_type={NUL}", None),
])
def test_nul_in_an_identifier_is_422(client, request_args) -> None:
    method, url, body = request_args
    response = getattr(client, method)(url, json=body)
    answer = response.get_json(silent=True)  # read whole: an export is streamed
    assert response.status_code == 422, answer
    assert answer["detail"] == "Invalid request."


def test_nul_in_a_runner_id_of_a_patch_is_422_and_changes_nothing(client) -> None:
    task_id = create(client)["id"]
    claim(client, "r1")
    response = patch(client, task_id, runner_id=f"r1{NUL}", status="completed")
    assert response.status_code == 422 and "runner_id" in response.json["errors"]
    assert get(client, task_id)["status"] == "running"


@pytest.mark.parametrize("task_id", [f"ab{NUL}cd", "a" * 201])
@pytest.mark.parametrize("request_args", [
    ("get", ""), ("get", "/log"), ("patch", ""), ("post", "/cancel"), ("post", "/rerun"),
])
def test_a_task_id_no_task_can_have_is_422(client, task_id, request_args) -> None:
    method, suffix = request_args
    body = {"status": "running"} if method == "patch" else None
    response = getattr(client, method)(f"{TASKS}/{task_id}{suffix}", json=body)
    assert response.status_code == 422, response.json
    assert list(response.json["errors"]) == ["task_id"]


def test_an_unknown_task_id_of_the_longest_length_is_404(client) -> None:
    assert client.get(f"{TASKS}/{'a' * 200}").status_code == 404


def _strings(field: fields.Field) -> list[fields.Field]:
    """The string fields a field loads, its items, keys, values and nested fields included."""
    if isinstance(field, fields.String):
        return [field]
    if isinstance(field, JsonObject):
        return []  # it checks its keys and values itself
    if isinstance(field, fields.List):
        return _strings(field.inner)
    if isinstance(field, fields.Dict):
        return [*_strings(field.key_field or fields.Raw()),
                *_strings(field.value_field or fields.Raw())]
    if isinstance(field, fields.Nested):
        return _loaded_strings(field.schema)
    return []


def _loaded_strings(schema: Schema) -> list[fields.Field]:
    return [string for field in schema.load_fields.values() for string in _strings(field)]


def _request_schemas() -> list[Any]:
    taken = {schema for operation in OPERATIONS.values()
             for schema in (operation.body, operation.query) if schema is not None}
    return [*sorted(taken, key=lambda schema: schema.__name__), RoutingFileSchema]


@pytest.mark.parametrize("schema", _request_schemas(), ids=lambda schema: schema.__name__)
def test_every_string_a_request_holds_is_text_or_a_name(schema) -> None:
    """A new string field of a request must say which it is, so that no NUL reaches a
    store."""
    loose = [string for string in _loaded_strings(schema())
             if not isinstance(string, (Text, Name))]
    assert loose == []
