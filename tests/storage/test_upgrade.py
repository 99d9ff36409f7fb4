"""Stores written by the previous version (tests/fixtures/v0.1: every task line whole,
with its rendered ``command``) are read by this one with nothing lost."""
from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest

from tests.support import FakeClock, open_app

FIXTURES = Path(__file__).parent.parent / "fixtures" / "v0.1"

pytestmark = pytest.mark.backend("jsonl")  # the database reads them through store copy


def old_lines(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines()]


def test_tasks_and_records_of_the_previous_version_read_the_same(logs_dir: Path) -> None:
    for name in ("tasks.jsonl", "metrics.jsonl"):
        shutil.copy(FIXTURES / name, logs_dir / name)
    latest = {line["id"]: line for line in old_lines("tasks.jsonl")}
    clock = FakeClock()
    clock.advance(days=1)  # the fixture was written at the clock's start
    app = open_app({"AGENT_LOGS_DIR": str(logs_dir), "AGENT_FSYNC": False, "CLOCK": clock})
    client = app.test_client()

    listed = client.get("/api/agent/tasks?limit=500").json
    assert listed["total"] == len(latest) == 4
    assert {task["id"]: task["status"] for task in listed["tasks"]} == {
        task_id: line["status"] for task_id, line in latest.items()}
    for task_id, line in latest.items():
        task = client.get(f"/api/agent/tasks/{task_id}").json
        assert {name: task[name] for name in line if name != "command"} == {
            name: value for name, value in line.items() if name != "command"}
        # The command is rendered by today's routing: the direction after "--".
        argv = shlex.split(task["command"])
        assert argv[-2:] == ["--", line["direction"]]
        assert argv[argv.index("--model") + 1] == line["model"]

    pending = next(task_id for task_id, line in latest.items() if line["status"] == "pending")
    assert client.patch(f"/api/agent/tasks/{pending}",
                        json={"status": "completed"}).status_code == 200
    aggregates = client.get("/api/agent/metrics?window_days=365").json
    assert aggregates["success_rate"]["total"] == len(old_lines("metrics.jsonl")) + 1

    assert app.extensions["agent"].tasks.compact(36500).kept == 4
    reread = open_app({"AGENT_LOGS_DIR": str(logs_dir), "AGENT_FSYNC": False}).test_client()
    assert reread.get(f"/api/agent/tasks/{pending}").json["status"] == "completed"
    assert reread.get("/api/agent/tasks").json["total"] == 4
