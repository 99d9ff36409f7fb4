"""The OpenAPI document covers every route, and the live service honours it under a
property-based fuzzer (schemathesis against a real gunicorn)."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import FlakyStrategyDefinition
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.openapi import openapi_path
from tests.support import GunicornServer

TOKEN = "fuzzing-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


def test_every_route_is_in_the_document(app, client) -> None:
    document = client.get("/api/openapi.json").json
    assert document["openapi"].startswith("3.")
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        described = document["paths"].get(openapi_path(rule))
        assert described is not None, f"{rule.rule} is not documented"
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            operation = described[method.lower()]
            assert operation["responses"], (method, rule.rule)
            assert operation["operationId"] == rule.endpoint


def test_errors_and_bodies_are_described(client) -> None:
    paths = client.get("/api/openapi.json").json["paths"]
    create = paths["/api/agent/tasks"]["post"]
    assert set(create["responses"]) == {"201", "400", "401", "403", "413", "415", "422", "503"}
    assert "400" in paths["/api/health"]["get"]["responses"]
    assert create["requestBody"]["content"]["application/json"]["schema"]
    assert paths["/api/agent/tasks/{task_id}"]["patch"]["responses"]["409"]["content"]
    assert paths["/api/health"]["get"]["security"] == []
    list_parameters = {p["name"] for p in paths["/api/agent/tasks"]["get"]["parameters"]}
    assert list_parameters == {"status", "task_type", "limit", "order", "offset"}


@pytest.fixture
def fuzzed_server(logs_dir: Path) -> Iterator[GunicornServer]:
    server = GunicornServer(logs_dir, env={"AGENT_API_TOKEN": TOKEN, "AGENT_FSYNC": "0"})
    server.start()
    yield server
    server.stop()


@pytest.fixture
def live_schema(fuzzed_server: GunicornServer):
    return schemathesis.openapi.from_url(f"{fuzzed_server.base_url}/api/openapi.json")


def test_live_service_conforms_to_its_document(live_schema) -> None:
    """Every operation, positive and negative inputs, checked against the document."""
    operations = [result.ok() for result in live_schema.get_all_operations()]
    labels = {operation.label for operation in operations}
    assert {"POST /api/agent/tasks", "PATCH /api/agent/tasks/{task_id}"} <= labels
    for operation in operations:
        @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE)
               | operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck),
                  phases=[Phase.explicit, Phase.generate], derandomize=True, database=None)
        def conforms(case) -> None:
            case.call_and_validate(headers=AUTH, checks=CHECKS)

        conforms()


def test_stateful_walks_create_and_patch_tasks(live_schema) -> None:
    """Follows the document's links: create a task, then read and PATCH it.

    The generated steps depend on what the live server answered, which Hypothesis may
    call flaky data generation when it replays a prefix; so every response is checked
    as it arrives, and what was found is asserted after the run whatever ended it.
    """
    checked: Counter[str] = Counter()
    failures: list[str] = []

    class Workflow(live_schema.as_state_machine()):
        def get_call_kwargs(self, case):
            return {"headers": AUTH}

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            checked[f"{case.method} {response.status_code}"] += 1
            try:
                case.validate_response(response, checks=CHECKS)
            except Exception as exc:  # a failed check, kept to report after the run
                failures.append(f"{case.method} {case.formatted_path}: {exc}")

    try:
        Workflow.run(settings=settings(max_examples=40, stateful_step_count=8, deadline=None,
                                       suppress_health_check=list(HealthCheck),
                                       phases=[Phase.generate], derandomize=True))
    except FlakyStrategyDefinition:
        pass
    assert not failures, failures
    # A PATCH answered 200 or 409 reached a task the walk created through a link (an
    # unlinked id is 404, a body the schema refuses 422); random bodies rarely pass the
    # PATCH schema's rules between fields (priority alone, retryable with failed).
    assert checked["POST 201"] and checked["PATCH 200"] + checked["PATCH 409"], checked
