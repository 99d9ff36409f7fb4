"""A runner under a ``run`` token whose report the service can no longer take: the
report is dropped as refused, not retried for ever."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from app.access.token_file import TokenFileEditor
from app.runner.api import ReportRefused, TaskApi
from tests.support import GunicornServer


@pytest.fixture
def hosts(logs_dir: Path, tmp_path: Path):
    """A server with a run token for each of two runner hosts and a submit token."""
    editor = TokenFileEditor(tmp_path / "tokens.json")
    secrets = {name: editor.add(name, role) for name, role in
               (("host-a", "run"), ("host-b", "run"), ("pipeline", "submit"))}
    server = GunicornServer(logs_dir, env={"AGENT_API_TOKENS_FILE": str(editor.path)}).start()
    yield server, secrets
    server.stop()


def test_a_report_of_a_task_another_host_took_over_is_refused(hosts) -> None:
    server, secrets = hosts
    created = requests.post(f"{server.base_url}/api/agent/tasks",
                            json={"direction": "d", "task_type": "impl"}, timeout=10,
                            headers={"Authorization": f"Bearer {secrets['pipeline']}"})
    assert created.status_code == 201, created.text
    host_a = TaskApi(server.base_url, secrets["host-a"])
    host_b = TaskApi(server.base_url, secrets["host-b"])
    claimed = host_a.claim("host-a/1", lease_seconds=5)
    assert claimed is not None and claimed["id"] == created.json()["id"]
    time.sleep(5.5)  # host-a's lease runs out; host-b takes the task
    assert host_b.claim("host-b/1", lease_seconds=60)["id"] == claimed["id"]
    report = {"runner_id": "host-a/1", "status": "completed", "duration_seconds": 1.0}
    with pytest.raises(ReportRefused, match="another runner host holds the task"):
        host_a.report(claimed["id"], report)
    with pytest.raises(ReportRefused, match="may not report"):
        host_a.report(claimed["id"], {**report, "runner_id": "host-b/1"})
