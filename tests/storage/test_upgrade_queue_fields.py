"""Tasks stored before claims knew priorities, delays and caps (tests/fixtures/v0.2, written
by that version: whole first lines, then changes, none with ``priority``, ``run_after``
or ``cancelled``) are claimed, counted and compacted by this version with nothing lost,
from the JSONL files as they are and from a PostgreSQL database of schema version 2."""
from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest

from app.storage.jsonl import JsonlMetricStore, JsonlTaskStore
from app.storage.postgres import PostgresDatabase, PostgresMetricStore, PostgresTaskStore
from app.storage.postgres import schema
from app.storage.stores import TaskStore

FIXTURES = Path(__file__).parent.parent / "fixtures" / "v0.2"
LATER = datetime(2026, 12, 1, 9, 5, tzinfo=timezone.utc)
"""After the fixture's tasks were made; the running task's lease runs until 9:10."""


def latest_states() -> dict[str, dict]:
    states: dict[str, dict] = {}
    for line in (FIXTURES / "tasks.jsonl").read_text().splitlines():
        change = json.loads(line)
        states[change["id"]] = {**states.get(change["id"], {}), **change}
    return states


def by_direction(states: dict[str, dict], direction: str) -> str:
    return next(task_id for task_id, state in states.items() if state["direction"] == direction)


def check_claims_and_counts(tasks: TaskStore) -> None:
    states = latest_states()
    assert {task_id: tasks.get(task_id) for task_id in states} == states
    busy = states[by_direction(states, "busy task")]
    with tasks.transaction() as tx:
        assert tx.next_pending(None, LATER)["id"] == by_direction(states, "waiting-heal task")
        assert tx.next_pending(["spec"], LATER)["id"] == by_direction(states, "waiting-spec task")
        assert tx.running_count([busy["model"]], LATER) == 1
        tx.save({"id": by_direction(states, "waiting-spec task"), "priority": 5})
        assert tx.next_pending(None, LATER)["id"] == by_direction(states, "waiting-spec task")
    assert tasks.counts() == {"pending": 2, "running": 1, "needs_decision": 1,
                              "completed": 1, "failed": 1}


@pytest.mark.backend("jsonl")
def test_the_jsonl_files_are_claimed_by_priority_with_nothing_lost(logs_dir: Path) -> None:
    for name in ("tasks.jsonl", "metrics.jsonl", "task-logs"):
        copy = shutil.copytree if name == "task-logs" else shutil.copy
        copy(FIXTURES / name, logs_dir / name)
    metrics = JsonlMetricStore(logs_dir / "metrics.jsonl", fsync=False)
    tasks = JsonlTaskStore(logs_dir / "tasks.jsonl", metrics=metrics, fsync=False)
    check_claims_and_counts(tasks)
    assert [record.task_id for record in metrics.records()] == [
        json.loads(line)["task_id"]
        for line in (FIXTURES / "metrics.jsonl").read_text().splitlines()]
    done = by_direction(latest_states(), "done task")
    assert tasks.read_log(done) == (FIXTURES / "task-logs" / f"{done}.log").read_text()


@pytest.mark.backend("postgresql")
def test_a_version_2_database_is_upgraded_with_its_rows(database_url: str) -> None:
    """Rows as version 2 wrote them (no priority, run_after or model column) get those
    columns filled from their states."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        for migration in schema.MIGRATIONS[:2]:
            conn.execute(migration)
        conn.execute("CREATE TABLE schema_version (version integer NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (2)")
        for task_id, state in latest_states().items():
            conn.execute(
                "INSERT INTO tasks (id, status, task_type, created_at, updated_at, runner_id, "
                "lease_expires_at, recorded, state) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (task_id, state["status"], state["task_type"], state["created_at"],
                 state["updated_at"], state.get("runner_id"), state.get("lease_expires_at"),
                 state.get("recorded"), json.dumps(state)))
    database = PostgresDatabase(database_url, pool_size=2)
    try:
        check_claims_and_counts(PostgresTaskStore(database))
        assert PostgresMetricStore(database).writable()
        with database.connect() as conn:
            assert schema.version(conn) == schema.LATEST
    finally:
        database.close()
