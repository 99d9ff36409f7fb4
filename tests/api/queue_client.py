"""Requests the queue-control tests make, over the Flask test client."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flask.testing import FlaskClient

from tests.support import FakeClock, open_app

TASKS = "/api/agent/tasks"


def create(client: FlaskClient, task_type: str = "spec", **body: Any) -> dict[str, Any]:
    response = client.post(TASKS, json={"direction": "d", "task_type": task_type, **body})
    assert response.status_code == 201, response.json
    return response.json


def claim(client: FlaskClient, runner_id: str, **body: Any) -> dict[str, Any] | None:
    """The task claimed, or None on a 204."""
    response = client.post(f"{TASKS}/claim", json={"runner_id": runner_id, **body})
    assert response.status_code in (200, 204), response.json
    return None if response.status_code == 204 else response.json


def patch(client: FlaskClient, task_id: str, **body: Any):
    return client.patch(f"{TASKS}/{task_id}", json=body)


def get(client: FlaskClient, task_id: str) -> dict[str, Any]:
    response = client.get(f"{TASKS}/{task_id}")
    assert response.status_code == 200, response.json
    return response.json


def routed_client(folder: Path, logs_dir: Path, clock: FakeClock, routing: dict[str, Any],
                  **settings: Any) -> FlaskClient:
    """A client of an app whose routing file is ``routing``."""
    path = folder / "routing.json"
    path.write_text(json.dumps(routing))
    return open_app({"AGENT_LOGS_DIR": str(logs_dir), "CLOCK": clock, "AGENT_FSYNC": False,
                     "AGENT_ROUTING_FILE": str(path), **settings}).test_client()
