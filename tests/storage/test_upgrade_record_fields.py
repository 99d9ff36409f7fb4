"""Stores written before metric records had optional fields (tests/fixtures/v0.3, made
by that version: finished, retried, lost, cancelled, rerun, waiting, scheduled and
running tasks, contexts with and without ``prompt_variant``, and their records, with what
that version answered for them) read the same with nothing lost: from the JSONL files
as they are, from a database they were copied into (``flask store copy``), and from a
database of schema version 3 upgraded in place."""
from __future__ import annotations

import csv
import io
import json
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest
from flask.testing import FlaskClient

from app.models.metrics import OPTIONAL_RECORD_FIELDS, RECORD_FIELDS
from app.storage.metric_records import as_stored
from app.storage.postgres import PostgresDatabase, PostgresMetricStore, schema
from app.storage.postgres.metrics import insert_record
from app.storage.store_copy import copy_stores
from tests.support import FakeClock, open_app
from tests.support.stores import database_url

FIXTURES = Path(__file__).parent.parent / "fixtures" / "v0.3"
WRITTEN_AT = datetime(2027, 1, 5, 9, 0, 38, tzinfo=timezone.utc)
"""The fixture writer's clock when it took the expected answers."""


def fixture_lines(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines()]


def put_fixture_in_place(logs_dir: Path, fixtures: Path = FIXTURES) -> None:
    """The fixture's stores in ``logs_dir``, or copied into the test's database."""
    url = database_url()
    if url is None:
        for name in ("tasks.jsonl", "metrics.jsonl"):
            shutil.copy(fixtures / name, logs_dir / name)
        return
    with tempfile.TemporaryDirectory() as staging:
        for name in ("tasks.jsonl", "metrics.jsonl"):
            shutil.copy(fixtures / name, Path(staging) / name)
        database = PostgresDatabase(url)
        try:
            copy_stores(Path(staging), database)
        finally:
            database.close()


NEW_TOP_KEYS = ("usage", "queue_wait", "by_prompt_variant", "by_skill_version", "by_executor")
"""What the aggregates answer that the previous versions did not."""
BUCKET_SUMS = ("cost_usd", "input_tokens", "output_tokens")
"""What each breakdown entry and each timeseries bucket gained."""


def seed_keys(answer: dict) -> dict:
    """An aggregates answer as the previous versions gave it: without the new keys."""
    old = {name: value for name, value in answer.items() if name not in NEW_TOP_KEYS}
    for part in ("by_task_type", "by_model"):
        old[part] = {label: {key: value for key, value in entry.items()
                             if key not in BUCKET_SUMS}
                     for label, entry in answer[part].items()}
    return old


def assert_nothing_known(answer: dict) -> None:
    """The new keys of an answer over records that know no usage, wait or label."""
    assert answer["usage"] == {
        "tasks_with_usage": 0, "input_tokens": None, "output_tokens": None,
        "cache_read_input_tokens": None, "cache_creation_input_tokens": None,
        "cost_usd": None, "cost_per_completed_task": None}
    assert answer["queue_wait"] == {"p50_seconds": None, "p95_seconds": None, "count": 0}
    assert (answer["by_prompt_variant"], answer["by_skill_version"],
            answer["by_executor"]) == ({}, {}, {})
    for part in ("by_task_type", "by_model"):
        assert all(entry[name] is None for entry in answer[part].values()
                   for name in BUCKET_SUMS)


@pytest.mark.parametrize("version", ["v0.1", "v0.2"])
def test_the_older_stores_know_no_usage(logs_dir: Path, version: str) -> None:
    """The stores of the versions before (tests/fixtures/v0.1, v0.2): every record counts,
    and every new key shows null or empty."""
    fixtures = FIXTURES.parent / version
    put_fixture_in_place(logs_dir, fixtures)
    client = open_app({"AGENT_LOGS_DIR": str(logs_dir), "AGENT_FSYNC": False,
                       "CLOCK": FakeClock(WRITTEN_AT)}).test_client()
    records = [json.loads(line) for line in (fixtures / "metrics.jsonl").read_text().splitlines()]
    answer = client.get("/api/agent/metrics?window_days=365").json
    assert answer["success_rate"]["total"] == len(records) > 0
    assert answer["success_rate"]["completed"] == sum(
        record["status"] == "completed" for record in records)
    assert {name: entry["count"] for name, entry in answer["by_model"].items()} == {
        model: sum(record["model"] == model for record in records)
        for model in {record["model"] for record in records}}
    assert_nothing_known(answer)
    series = client.get("/api/agent/metrics/timeseries?window_days=365").json["series"]
    assert sum(point["completed"] + point["failed"] for point in series) == len(records)
    assert all(point[name] is None for point in series for name in BUCKET_SUMS)


def task_by_direction(client: FlaskClient, direction: str) -> dict:
    tasks = client.get("/api/agent/tasks?limit=500").json["tasks"]
    return next(task for task in tasks if task["direction_preview"] == direction)


def test_the_previous_stores_answer_as_before(logs_dir: Path) -> None:
    put_fixture_in_place(logs_dir)
    client = open_app({"AGENT_LOGS_DIR": str(logs_dir), "AGENT_FSYNC": False,
                       "CLOCK": FakeClock(WRITTEN_AT)}).test_client()

    expected_tasks = json.loads((FIXTURES / "expected-tasks.json").read_text())
    for task_id, answer in expected_tasks.items():
        assert client.get(f"/api/agent/tasks/{task_id}").json == {
            **answer, "usage": None, "executor": None}
    answer = client.get("/api/agent/metrics?window_days=30").json
    expected_metrics = json.loads((FIXTURES / "expected-metrics.json").read_text())
    assert seed_keys(answer) == seed_keys(expected_metrics)
    assert answer == expected_metrics
    assert_nothing_known(answer)
    series = client.get("/api/agent/metrics/timeseries?window_days=30").json["series"]
    assert sum(point["completed"] + point["failed"] for point in series) == 5
    assert all(point[name] is None for point in series for name in BUCKET_SUMS)
    assert client.get("/api/agent/metrics/records?format=jsonl").data == (
        FIXTURES / "expected-records.jsonl").read_bytes()
    rows = list(csv.DictReader(io.StringIO(
        client.get("/api/agent/metrics/records?format=csv").data.decode())))
    old_rows = list(csv.DictReader(io.StringIO((FIXTURES / "expected-records.csv").read_text())))
    assert rows == [{**row, **dict.fromkeys(OPTIONAL_RECORD_FIELDS, "")} for row in old_rows]


def test_tasks_of_the_previous_version_end_with_what_is_known(logs_dir: Path) -> None:
    """A task claimed before claims were timed has no wait; a context label the previous
    version took but a record cannot hold (7, "") is left out; one claimed now has its
    wait, its attempts and its context's prompt_variant."""
    put_fixture_in_place(logs_dir)
    clock = FakeClock(WRITTEN_AT)
    client = open_app({"AGENT_LOGS_DIR": str(logs_dir), "AGENT_FSYNC": False,
                       "CLOCK": clock}).test_client()
    odd = task_by_direction(client, "odd context")
    assert client.patch(f"/api/agent/tasks/{odd['id']}", json={
        "runner_id": "host-1/r4", "status": "completed", "duration_seconds": 1.0,
        "usage": {"output_tokens": 3}, "executor": "old runner"}).status_code == 200
    busy = task_by_direction(client, "busy task")
    clock.advance(seconds=2)
    claimed = client.post("/api/agent/tasks/claim", json={"runner_id": "host-2/r1"}).json
    assert claimed["id"] == busy["id"]
    assert client.patch(f"/api/agent/tasks/{busy['id']}", json={
        "runner_id": "host-2/r1", "status": "failed", "duration_seconds": 1.5}
    ).status_code == 200

    lines = client.get("/api/agent/metrics/records").data.decode().splitlines()
    assert lines[:-2] == (FIXTURES / "expected-records.jsonl").read_text().splitlines()
    odd_record, busy_record = map(json.loads, lines[-2:])
    assert {name: odd_record[name] for name in odd_record if name not in RECORD_FIELDS} == {
        "attempts": 1, "output_tokens": 3, "executor": "old runner"}
    waited = (WRITTEN_AT - datetime.fromisoformat(busy["created_at"])).total_seconds() + 2
    assert {name: busy_record[name] for name in busy_record if name not in RECORD_FIELDS} == {
        "attempts": 1, "wait_seconds": waited, "prompt_variant": "long"}
    answer = client.get("/api/agent/metrics?window_days=30").json
    assert answer["success_rate"] == {"completed": 4, "failed": 3, "total": 7, "rate": 0.57}
    # The two new records alone know anything: their tokens, wait and prompt_variant.
    assert answer["usage"]["tasks_with_usage"] == 1
    assert (answer["usage"]["output_tokens"], answer["usage"]["input_tokens"],
            answer["usage"]["cost_usd"]) == (3, None, None)
    assert answer["queue_wait"] == {"p50_seconds": waited, "p95_seconds": waited, "count": 1}
    assert {name: entry["count"] for name, entry in answer["by_prompt_variant"].items()} == {
        "long": 1}
    assert {name: entry["count"] for name, entry in answer["by_executor"].items()} == {
        "old runner": 1}


@pytest.mark.backend("postgresql")
def test_a_version_3_database_keeps_its_records_and_takes_the_new_fields(
    database_url: str,
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        for migration in schema.MIGRATIONS[:3]:
            conn.execute(migration)
        conn.execute("CREATE TABLE schema_version (version integer NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (3)")
        for record in fixture_lines("metrics.jsonl"):
            conn.execute(
                "INSERT INTO metric_records (task_id, task_type, model, duration_seconds, "
                "status, created_at) VALUES (%(task_id)s, %(task_type)s, %(model)s, "
                "%(duration_seconds)s, %(status)s, %(created_at)s)", record)
    database = PostgresDatabase(database_url, pool_size=2)
    try:
        metrics = PostgresMetricStore(database)
        assert [as_stored(record) for record in metrics.records()] == fixture_lines(
            "metrics.jsonl")
        with database.connect() as conn:
            assert schema.version(conn) == schema.LATEST
        new = {**fixture_lines("metrics.jsonl")[0], "task_id": "new", "attempts": 2,
               "cost_usd": 0.25, "executor": "e"}
        with database.connection() as conn:
            assert insert_record(conn, new)
        assert as_stored(list(metrics.records())[-1]) == {
            **{name: new[name] for name in RECORD_FIELDS if name != "created_at"},
            "attempts": 2, "cost_usd": 0.25, "executor": "e", "created_at": new["created_at"]}
    finally:
        database.close()
