"""Numbers are JSON numbers: a string holding one, a boolean, or (for an integer) a
fraction is 422, as the OpenAPI document's types say."""
from __future__ import annotations

import pytest

from tests.api.queue_client import TASKS, claim, create, get, patch


@pytest.mark.parametrize("body", [
    {"runner_id": "r1", "lease_seconds": "600"},
    {"runner_id": "r1", "lease_seconds": 5.5},
    {"runner_id": "r1", "lease_seconds": True},
])
def test_a_claim_with_a_lease_that_is_not_an_integer_is_422(client, body) -> None:
    create(client)
    response = client.post(f"{TASKS}/claim", json=body)
    assert response.status_code == 422 and "lease_seconds" in response.json["errors"]


@pytest.mark.parametrize("field, value", [
    ("progress_pct", "50"), ("progress_pct", True), ("duration_seconds", "42"),
    ("duration_seconds", False), ("retry_after_seconds", "5"),
])
def test_a_patch_with_a_number_that_is_not_one_is_422(client, field, value) -> None:
    task_id = create(client)["id"]
    claim(client, "r1")
    body = {"runner_id": "r1", "status": "failed", field: value}
    if field == "retry_after_seconds":
        body["retryable"] = True
    response = patch(client, task_id, **body)
    assert response.status_code == 422 and field in response.json["errors"]
    assert get(client, task_id)["status"] == "running"


def test_json_numbers_are_taken(client) -> None:
    create(client)
    task_id = claim(client, "r1", lease_seconds=600)["id"]
    assert patch(client, task_id, runner_id="r1", progress_pct=50).status_code == 200
    done = patch(client, task_id, runner_id="r1", status="completed", duration_seconds=42)
    assert done.status_code == 200 and done.json["duration_seconds"] == 42
