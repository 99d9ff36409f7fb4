"""The optional fields of a metric record: made by the service from the task (its
context, claims, and the usage and executor of the report that ends it), with the cost
from the routing file's prices when no report gives one; stored, read back and
exported on both backends."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from app.clock import isoformat
from app.models.metrics import OPTIONAL_RECORD_FIELDS, RECORD_FIELDS
from app.services.metrics_service import MetricsService
from tests.api.queue_client import claim, create, get, patch, routed_client
from tests.support import FakeClock, jsonl_metrics
from tests.support.stores import seed_lines

LOCAL_MODEL = "ollama/glm-4.7-flash:latest"
CLOUD_MODEL = "claude-3-5-haiku-20241022"
FULL_USAGE = {"input_tokens": 1200, "output_tokens": 340, "cache_read_input_tokens": 5000,
              "cache_creation_input_tokens": 80, "cost_usd": 0.0123}
PRICES = {"input_per_mtok": 3, "output_per_mtok": 15, "cache_read_per_mtok": 0.3,
          "cache_creation_per_mtok": 3.75}


def exported(client: FlaskClient) -> list[dict[str, Any]]:
    response = client.get("/api/agent/metrics/records?format=jsonl")
    assert response.status_code == 200
    return [json.loads(line) for line in response.data.decode().splitlines()]


def exported_csv(client: FlaskClient) -> list[dict[str, str]]:
    response = client.get("/api/agent/metrics/records?format=csv")
    assert response.status_code == 200
    return list(csv.DictReader(io.StringIO(response.data.decode())))


def finish(client: FlaskClient, task_id: str, runner_id: str | None = None,
           **body: Any) -> dict[str, Any]:
    """Report (with ``runner_id``) or move (a person) the task to completed."""
    who = {} if runner_id is None else {"runner_id": runner_id}
    response = patch(client, task_id, status="completed", **who, **body)
    assert response.status_code == 200, response.json
    return response.json


def test_a_record_holds_every_field_the_task_knows(client, clock: FakeClock) -> None:
    task = create(client, "impl", context={"prompt_variant": "terse-v2",
                                           "skill_version": "2026.11.3"})
    clock.advance(seconds=2.5)
    assert claim(client, "host/r1")["id"] == task["id"]
    clock.advance(seconds=4)
    finished_at = isoformat(clock())
    shown = finish(client, task["id"], "host/r1", duration_seconds=3.25, usage=FULL_USAGE,
                   executor="claude-code 1.2.3")
    assert (shown["usage"], shown["executor"]) == (FULL_USAGE, "claude-code 1.2.3")
    assert get(client, task["id"])["usage"] == FULL_USAGE

    [record] = exported(client)
    assert record == {
        "task_id": task["id"], "task_type": "impl", "model": LOCAL_MODEL,
        "duration_seconds": 3.25, "status": "completed",
        "created_at": finished_at,
        "attempts": 1, "wait_seconds": 2.5, **FULL_USAGE, "prompt_variant": "terse-v2",
        "skill_version": "2026.11.3", "executor": "claude-code 1.2.3"}
    [row] = exported_csv(client)
    assert list(row) == [*RECORD_FIELDS, *OPTIONAL_RECORD_FIELDS]
    assert {name: row[name] for name in OPTIONAL_RECORD_FIELDS} == {
        "attempts": "1", "wait_seconds": "2.5", "input_tokens": "1200", "output_tokens": "340",
        "cache_read_input_tokens": "5000", "cache_creation_input_tokens": "80",
        "cost_usd": "0.0123", "prompt_variant": "terse-v2", "skill_version": "2026.11.3",
        "executor": "claude-code 1.2.3"}


def test_unknown_fields_are_absent_not_zero(client) -> None:
    """A task a person ends before any claim, without usage: no attempts, no wait, no
    tokens, no cost; its usage and executor show null."""
    task = create(client)
    shown = finish(client, task["id"])
    assert (shown["usage"], shown["executor"]) == (None, None)
    [record] = exported(client)
    assert set(record) == set(RECORD_FIELDS)
    [row] = exported_csv(client)
    assert all(row[name] == "" for name in OPTIONAL_RECORD_FIELDS)


def test_a_persons_transition_carries_usage_and_executor(client) -> None:
    task = create(client)
    finish(client, task["id"], usage={"output_tokens": 9}, executor="by hand")
    [record] = exported(client)
    assert {name: record.get(name) for name in OPTIONAL_RECORD_FIELDS if name in record} == {
        "output_tokens": 9, "executor": "by hand"}


@pytest.mark.parametrize(("usage", "prices", "cost"), [
    # every kind priced: (1200·3 + 340·15 + 5000·0.3 + 80·3.75) / 10⁶
    ({**FULL_USAGE, "cost_usd": None}, PRICES, 0.0105),
    # a reported cost wins over the prices
    ({"input_tokens": 1000, "cost_usd": 0.5}, PRICES, 0.5),
    # a kind with tokens and no price: unknown
    ({"input_tokens": 1000, "cache_read_input_tokens": 10},
     {"input_per_mtok": 3, "output_per_mtok": 15}, None),
    # a kind without a price but without tokens either costs nothing
    ({"input_tokens": 1000, "cache_read_input_tokens": 0}, {"input_per_mtok": 3}, 0.003),
    # no tokens: unknown
    ({}, PRICES, None),
    (None, PRICES, None),
    # no prices for the model: unknown
    ({"input_tokens": 1000}, None, None),
])
def test_the_cost_is_reported_or_priced_or_unknown(
    tmp_path: Path, logs_dir: Path, clock: FakeClock, usage: dict | None,
    prices: dict | None, cost: float | None,
) -> None:
    routing = {"prices": {CLOUD_MODEL: PRICES, **({} if prices is None else
                                                  {LOCAL_MODEL: prices})}}
    client = routed_client(tmp_path, logs_dir, clock, routing)
    task = create(client, "impl")
    claim(client, "host/r1")
    body = {} if usage is None else {
        "usage": {name: value for name, value in usage.items() if value is not None}}
    finish(client, task["id"], "host/r1", **body)
    [record] = exported(client)
    assert record.get("cost_usd") == cost
    assert ("cost_usd" in record) is (cost is not None)


@pytest.mark.parametrize("prices", [
    {LOCAL_MODEL: {"input_per_mtok": -1}},
    {LOCAL_MODEL: {"input_per_mtok": "3"}},
    {LOCAL_MODEL: {"per_token": 3}},
    {LOCAL_MODEL: 3},
    [],
])
def test_a_routing_file_with_bad_prices_is_refused(
    tmp_path: Path, logs_dir: Path, clock: FakeClock, prices: Any
) -> None:
    client = routed_client(tmp_path, logs_dir, clock, {"prices": prices})
    response = client.post("/api/agent/tasks", json={"direction": "d", "task_type": "impl"})
    assert response.status_code == 503
    assert "routing file" in response.json["detail"] and "prices" in response.json["detail"]


def test_a_retried_task_leaves_one_record_with_its_claims(client, clock: FakeClock) -> None:
    task = create(client, "impl", max_attempts=3)
    for attempt in (1, 2):
        assert claim(client, "host/r1")["attempts"] == attempt
        response = patch(client, task["id"], runner_id="host/r1", status="failed",
                         retryable=True, retry_after_seconds=0, usage={"input_tokens": 1})
        assert response.status_code == 200 and response.json["status"] == "pending"
        assert response.json["usage"] is None  # a retried attempt's usage is not the task's
        clock.advance(seconds=1)
    assert claim(client, "host/r1")["attempts"] == 3
    finish(client, task["id"], "host/r1", usage={"input_tokens": 7})
    [record] = exported(client)
    assert (record["attempts"], record["wait_seconds"], record["input_tokens"]) == (3, 0.0, 7)


BAD_REPORTS = [
    {"usage": {"input_tokens": "5"}},
    {"usage": {"input_tokens": 1.5}},
    {"usage": {"output_tokens": -1}},
    {"usage": {"cache_read_input_tokens": True}},
    {"usage": {"cache_creation_input_tokens": 2 ** 60}},
    {"usage": {"cost_usd": "0.1"}},
    {"usage": {"cost_usd": -0.01}},
    {"usage": {"cost_usd": False}},
    {"usage": {"tokens": 5}},
    {"usage": None},
    {"usage": [1]},
    {"executor": ""},
    {"executor": 5},
    {"executor": "x" * 201},
    {"executor": "a\u0000b"},
]


@pytest.mark.parametrize("body", BAD_REPORTS)
@pytest.mark.parametrize("by_runner", [True, False])
def test_bad_usage_or_executor_is_refused_and_nothing_is_stored(
    client, body: dict, by_runner: bool
) -> None:
    task = create(client)
    claim(client, "host/r1")
    who = {"runner_id": "host/r1"} if by_runner else {}
    response = patch(client, task["id"], status="completed", **who, **body)
    assert response.status_code == 422
    assert set(response.json["errors"]) == set(body)
    shown = get(client, task["id"])
    assert (shown["status"], shown["usage"], shown["executor"]) == ("running", None, None)
    assert exported(client) == []


@pytest.mark.parametrize("body", [{"status": "running"}, {"runner_id": "host/r1"},
                                  {"runner_id": "host/r1", "status": "needs_decision",
                                   "decision_prompt": "?"}, {}])
@pytest.mark.parametrize("field", [{"usage": {"input_tokens": 1}}, {"executor": "x"}])
def test_usage_and_executor_come_only_with_the_end(client, body: dict, field: dict) -> None:
    task = create(client)
    claim(client, "host/r1")
    response = patch(client, task["id"], **body, **field)
    assert response.status_code == 422 and set(field) <= set(response.json["errors"])
    assert get(client, task["id"])["usage"] is None


@pytest.mark.parametrize("context", [
    {"prompt_variant": 5}, {"prompt_variant": ""}, {"prompt_variant": "x" * 201},
    {"prompt_variant": None}, {"skill_version": ["1"]}, {"skill_version": ""},
])
def test_bad_context_labels_are_refused_and_nothing_is_stored(client, context: dict) -> None:
    response = client.post("/api/agent/tasks",
                           json={"direction": "d", "task_type": "spec", "context": context})
    assert response.status_code == 422 and "context" in response.json["errors"]
    assert client.get("/api/agent/tasks").json["total"] == 0


def test_a_rerun_keeps_the_context_labels(client) -> None:
    task = create(client, context={"prompt_variant": "p" * 200, "skill_version": "s"})
    finish(client, task["id"])
    again = client.post(f"/api/agent/tasks/{task['id']}/rerun").json
    finish(client, again["id"])
    assert [(r["prompt_variant"], r["skill_version"]) for r in exported(client)] == [
        ("p" * 200, "s")] * 2


STORED_LINE = {"task_id": "old", "task_type": "impl", "model": LOCAL_MODEL,
               "duration_seconds": 2.0, "status": "completed",
               "created_at": "2026-03-01T11:00:00.000000+00:00"}


@pytest.mark.parametrize("noise", [False, True], ids=["clean chunk", "chunk with noise"])
def test_wrong_optional_fields_are_dropped_and_the_record_counts(
    client, logs_dir: Path, noise: bool
) -> None:
    """Lines written by hand: each optional field of the wrong type or range is left out
    of its record, which counts and exports as before (a chunk with an invalid line is
    decoded line by line, a clean one at once: both read alike)."""
    lines: list[object] = [
        {**STORED_LINE, "attempts": "2", "wait_seconds": -1, "input_tokens": 1.5,
         "output_tokens": 7, "cache_read_input_tokens": True, "cost_usd": "0.1",
         "prompt_variant": "", "skill_version": "ok", "executor": "x" * 201},
        {**STORED_LINE, "task_id": "other", "attempts": 0, "wait_seconds": 3,
         "cache_creation_input_tokens": -5, "cost_usd": 2, "executor": 9},
    ]
    if noise:
        lines.insert(1, {"task_id": "broken"})
    seed_lines(logs_dir, "metrics.jsonl", lines)
    assert client.get("/api/agent/metrics?window_days=1").json["success_rate"]["total"] == 2
    first, second = exported(client)
    assert first == {**STORED_LINE, "output_tokens": 7, "skill_version": "ok"}
    assert second == {**STORED_LINE, "task_id": "other", "wait_seconds": 3.0, "cost_usd": 2.0}


def test_a_record_with_fields_it_cannot_hold_is_refused(tmp_path: Path) -> None:
    metrics: MetricsService = jsonl_metrics(tmp_path / "metrics.jsonl")
    for optional in ({"attempts": 0}, {"cost_usd": -1}, {"colour": "red"}):
        with pytest.raises(ValueError):
            metrics.checked_record("t", "impl", LOCAL_MODEL, 1.0, "completed", optional)
    assert metrics.checked_record("t", "impl", LOCAL_MODEL, 1.0, "completed",
                                  {"executor": "e", "attempts": 2})["attempts"] == 2
