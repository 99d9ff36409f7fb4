"""A real gunicorn with several workers, driven over HTTP."""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import requests

from app.services import metrics_service
from tests.support import GunicornServer


def test_every_worker_sees_the_same_tasks_and_metrics(logs_dir) -> None:
    server = GunicornServer(
        logs_dir, workers=3,
        env={"GUNICORN_CMD_ARGS": "--access-logformat '%(p)s %(m)s %(U)s %(s)s'"},
    ).start()
    try:
        base = f"{server.base_url}/api/agent"
        created = requests.post(f"{base}/tasks", json={"direction": "d", "task_type": "impl"})
        assert created.status_code == 201
        task_id = created.json()["id"]
        with ThreadPoolExecutor(8) as pool:
            seen = list(pool.map(lambda _: requests.get(f"{base}/tasks/{task_id}", timeout=10),
                                 range(40)))
        assert all(r.status_code == 200 and r.json()["id"] == task_id for r in seen)
        assert requests.patch(f"{base}/tasks/{task_id}", json={"status": "running"}).ok
        conflicts = [requests.patch(f"{base}/tasks/{task_id}", json={"status": "running"})
                     for _ in range(5)]
        assert {r.status_code for r in conflicts} == {409}
        done = requests.patch(f"{base}/tasks/{task_id}",
                              json={"status": "completed", "duration_seconds": 4})
        assert done.status_code == 200
        with ThreadPoolExecutor(8) as pool:
            bodies = list(pool.map(lambda _: requests.get(f"{base}/metrics", timeout=10).json(),
                                   range(40)))
        assert all(body["success_rate"]["total"] == 1 for body in bodies)
        assert all(body["execution_time"]["p50_seconds"] == 4 for body in bodies)
        bad = requests.post(f"{base}/tasks", data="{oops",
                            headers={"Content-Type": "application/json"})
        assert bad.status_code == 400 and bad.json()["detail"]
    finally:
        server.stop()
    access = server.log_path.read_text()
    pids = set(re.findall(r"^<(\d+)> GET /api/agent/(?:tasks/\w+|metrics) 200", access, re.M))
    assert len(pids) >= 2, "the requests should have reached more than one worker"


def test_a_new_record_is_on_the_next_get_from_every_worker(logs_dir) -> None:
    server = GunicornServer(
        logs_dir, workers=3,
        env={"GUNICORN_CMD_ARGS": "--access-logformat '%(p)s %(m)s %(U)s %(s)s'"},
    ).start()
    writer = metrics_service.service_for(logs_dir)
    url = f"{server.base_url}/api/agent/metrics"
    try:
        with ThreadPoolExecutor(6) as pool:
            for round_number in range(1, 6):
                writer.record_task(f"task-{round_number}", "test", "m", round_number, "failed")
                totals = list(pool.map(
                    lambda _: requests.get(url, timeout=10).json()["success_rate"]["failed"],
                    range(12)))
                assert totals == [round_number] * 12
    finally:
        server.stop()
    access = server.log_path.read_text()
    assert len(set(re.findall(r"^<(\d+)> GET /api/agent/metrics 200", access, re.M))) >= 2
