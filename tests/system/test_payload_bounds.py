"""What one request can make the service store and send back, through real gunicorn.

A direction full of quotes was stored five times over (the shell-quoted command repeats
it, and every state change repeated the whole task), and a list of 500 such tasks was
hundreds of MB. Now a stored task costs about its request body, and lists hold summaries.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import requests

from app.models.agent import DIRECTION_PREVIEW_CHARS
from tests.support import GunicornServer

QUOTES_DIRECTION = "it's \"quoted\" 'twice'; " * 2500  # about 60,000 characters
TASKS = 60


@pytest.mark.backend("jsonl")
def test_a_stored_task_costs_at_most_twice_its_body_and_lists_stay_small(logs_dir: Path):
    body = json.dumps({"direction": QUOTES_DIRECTION, "task_type": "impl",
                       "context": {"note": "x" * 1000}}).encode()
    tasks_file = logs_dir / "tasks.jsonl"
    server = GunicornServer(logs_dir, env={"AGENT_FSYNC": "0"}).start()
    url = f"{server.base_url}/api/agent/tasks"
    json_type = {"Content-Type": "application/json"}
    try:
        ids = []
        for _ in range(TASKS):
            created = requests.post(url, data=body, headers=json_type, timeout=30)
            assert created.status_code == 201
            ids.append(created.json()["id"])
        for task_id in ids:  # a task's whole life: claimed, then finished
            for change in ({"status": "running"},
                           {"status": "completed", "duration_seconds": 1.5}):
                assert requests.patch(f"{url}/{task_id}", json=change, timeout=30).ok
        stored_bytes = tasks_file.stat().st_size
        listed = requests.get(url, params={"limit": 500}, timeout=30)
        whole = requests.get(f"{url}/{ids[0]}", timeout=30).json()
    finally:
        server.stop()
    assert stored_bytes <= 2 * len(body) * TASKS, (stored_bytes, len(body))
    assert listed.json()["total"] == TASKS
    assert len(listed.content) < TASKS * 2000, len(listed.content)
    item = listed.json()["tasks"][0]
    assert "output" not in item and "command" not in item and "context" not in item
    assert item["direction_preview"] == QUOTES_DIRECTION[:DIRECTION_PREVIEW_CHARS]
    assert whole["direction"] == QUOTES_DIRECTION
    assert shlex.split(whole["command"])[-2:] == ["--", QUOTES_DIRECTION]
