"""Faults with real processes: a writer killed mid-append, a dead lock holder, a full
disk, a folder that cannot be written."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from app import config
from app.storage.jsonl.log_writer import JsonlLog
from app.storage.stores import StoreUnavailable
from tests.support.processes import spawn
from tests.support import GunicornServer, jsonl_metrics, poll

WAIT = 60

pytestmark = pytest.mark.backend("jsonl")  # files on disk; the database: test_postgres_backend


def stored_task_ids(logs_dir: Path) -> Counter[str]:
    """How many parseable records each task_id has in the metrics store."""
    reader = JsonlLog(config.metrics_path(logs_dir)).reader()
    return Counter(r["task_id"] for b in poll(reader) for _, r in b.records)


def read_ids(process: subprocess.Popen[str], count: int) -> list[str]:
    assert process.stdout is not None
    return [process.stdout.readline().strip() for _ in range(count)]


def test_acknowledged_records_survive_a_sigkilled_writer(logs_dir: Path) -> None:
    writer = spawn("record", str(logs_dir), "killed", "0")
    acknowledged = read_ids(writer, 200)
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=WAIT)
    assert writer.stdout is not None
    acknowledged += [line.strip() for line in writer.stdout if line.strip()]

    stored = stored_task_ids(logs_dir)
    assert len(acknowledged) >= 200 and set(acknowledged) <= set(stored)
    assert max(stored.values()) == 1

    store = jsonl_metrics(config.metrics_path(logs_dir))
    assert store.get_aggregates(30)["success_rate"]["total"] == len(stored)
    assert store.record_task("after-the-crash", "impl", "m", 1.0, "completed")
    assert stored_task_ids(logs_dir)["after-the-crash"] == 1
    assert store.get_aggregates(30)["success_rate"]["total"] == len(stored) + 1


def test_a_lock_left_by_a_killed_process_does_not_block(logs_dir: Path) -> None:
    store = logs_dir / "metrics.jsonl"
    holder = spawn("hold-lock", str(store))
    assert read_ids(holder, 1) == ["locked"]
    assert (logs_dir / "metrics.jsonl.lock").exists()
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=WAIT)
    appender = spawn("append", str(store), "1")
    assert appender.wait(timeout=WAIT) == 0
    assert [r for b in poll(JsonlLog(store).reader()) for _, r in b.records] == [{"n": 1}]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs: a real filesystem that really fills up."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)],
        capture_output=True, text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(folder: Path) -> Path:
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as handle:
        try:
            while handle.write(b"\0" * 4096):
                pass
        except OSError:
            pass
    return filler


def test_full_disk_answers_503_and_keeps_serving_reads(small_disk: Path, tmp_path: Path) -> None:
    logs = small_disk / "logs"
    server = GunicornServer(logs)
    server.log_path = tmp_path / "gunicorn.out"
    server.start()
    base = f"{server.base_url}/api/agent"
    try:
        task = requests.post(f"{base}/tasks", json={"direction": "d", "task_type": "impl"},
                             timeout=WAIT).json()
        assert requests.patch(f"{base}/tasks/{task['id']}", json={"status": "running"},
                              timeout=WAIT).ok
        tasks_before = (logs / "tasks.jsonl").read_bytes()
        metrics_before = (logs / "metrics.jsonl").read_bytes() if (
            logs / "metrics.jsonl").exists() else b""
        filler = fill(small_disk)

        health = requests.get(f"{server.base_url}/api/health", timeout=WAIT).json()
        assert health["status"] == "degraded"
        assert not health["stores"]["tasks"]["writable"]
        big = "x" * 8192
        created = requests.post(f"{base}/tasks", json={"direction": big, "task_type": "impl"},
                                timeout=WAIT)
        assert created.status_code == 503, created.text
        assert "tasks.jsonl" in created.json()["detail"]
        finished = requests.patch(f"{base}/tasks/{task['id']}",
                                  json={"status": "completed", "output": big}, timeout=WAIT)
        assert finished.status_code == 503, finished.text
        assert (logs / "tasks.jsonl").read_bytes() == tasks_before
        metrics_now = (logs / "metrics.jsonl").read_bytes() if (
            logs / "metrics.jsonl").exists() else b""
        assert metrics_now == metrics_before

        for _ in range(5):
            shown = requests.get(f"{base}/tasks/{task['id']}", timeout=WAIT)
            assert shown.status_code == 200 and shown.json()["status"] == "running"
            assert requests.get(f"{base}/metrics", timeout=WAIT).status_code == 200

        filler.unlink()
        assert requests.get(f"{server.base_url}/api/health", timeout=WAIT).json()["status"] == "ok"
        done = requests.patch(f"{base}/tasks/{task['id']}", json={"status": "completed"},
                              timeout=WAIT)
        assert done.status_code == 200
        assert requests.get(f"{base}/metrics", timeout=WAIT).json()["success_rate"]["total"] == 1
    finally:
        server.stop()


def chattr(flag: str, *paths: Path) -> bool:
    if shutil.which("chattr") is None:
        return False
    done = subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True)
    return done.returncode == 0


def test_an_unwritable_metric_store_answers_503_and_the_record_follows_the_task(
    app, client, logs_dir
) -> None:
    """The task's final state is written first; the record it could not get then is
    written from the task by the first read once the store is writable again."""
    task = client.post("/api/agent/tasks", json={"direction": "d", "task_type": "spec"}).json
    metrics_store = logs_dir / "metrics.jsonl"
    metrics_store.touch()
    if not chattr("+i", metrics_store):
        pytest.skip("chattr +i is not supported on this filesystem")
    try:
        health = client.get("/api/health").json
        assert health["status"] == "degraded" and not health["stores"]["metrics"]["writable"]
        finished = client.patch(f"/api/agent/tasks/{task['id']}",
                                json={"status": "failed", "duration_seconds": 7.25})
        assert finished.status_code == 503 and "metrics.jsonl" in finished.json["detail"]
        assert client.get(f"/api/agent/tasks/{task['id']}").json["status"] == "failed"
        assert client.get("/api/agent/metrics").json["success_rate"]["total"] == 0
        with pytest.raises(StoreUnavailable):
            app.extensions["agent"].metrics.record_task("t", "impl", "m", 1.0, "completed")
    finally:
        chattr("-i", metrics_store)
    again = client.patch(f"/api/agent/tasks/{task['id']}", json={"status": "completed"})
    assert again.status_code == 409
    assert client.get("/api/agent/metrics").json["success_rate"]["failed"] == 1
    [record] = [json.loads(line) for line in metrics_store.read_text().splitlines()]
    assert (record["status"], record["duration_seconds"]) == ("failed", 7.25)


def test_unwritable_folder_answers_503_on_create(client, logs_dir) -> None:
    if not chattr("+i", logs_dir):
        pytest.skip("chattr +i is not supported on this filesystem")
    try:
        created = client.post("/api/agent/tasks", json={"direction": "d", "task_type": "spec"})
        assert created.status_code == 503 and created.json["detail"]
        assert client.get("/api/agent/tasks").json == {"tasks": [], "total": 0}
        assert client.get("/api/health").json["status"] == "degraded"
    finally:
        chattr("-i", logs_dir)
    assert client.post("/api/agent/tasks",
                       json={"direction": "d", "task_type": "spec"}).status_code == 201


def test_compaction_in_an_unwritable_folder_changes_nothing(app, client, logs_dir) -> None:
    client.post("/api/agent/tasks", json={"direction": "d", "task_type": "spec"})
    before = sorted(path.name for path in logs_dir.iterdir())
    content = (logs_dir / "tasks.jsonl").read_bytes()
    if not chattr("+i", logs_dir):
        pytest.skip("chattr +i is not supported on this filesystem")
    try:
        result = app.test_cli_runner().invoke(
            args=["tasks", "compact", "--keep-days", "0", "--yes"])
    finally:
        chattr("-i", logs_dir)
    assert result.exit_code == 1 and "cannot rewrite" in result.output
    assert sorted(path.name for path in logs_dir.iterdir()) == before
    assert (logs_dir / "tasks.jsonl").read_bytes() == content


def test_a_process_killed_between_the_final_state_and_its_record(logs_dir: Path) -> None:
    server = GunicornServer(logs_dir).start()
    try:
        base = f"{server.base_url}/api/agent"
        task = requests.post(f"{base}/tasks", json={"direction": "d", "task_type": "impl"},
                             timeout=WAIT).json()
        dying = spawn("finish-then-die", str(logs_dir), task["id"], "completed", "3.5")
        assert dying.wait(timeout=WAIT) == 9
        assert not (logs_dir / "metrics.jsonl").exists() or task["id"] not in (
            logs_dir / "metrics.jsonl").read_text()
        seen = requests.get(f"{base}/tasks/{task['id']}", timeout=WAIT).json()
        assert (seen["status"], seen["duration_seconds"]) == ("completed", 3.5)
        metrics = requests.get(f"{base}/metrics", timeout=WAIT).json()
    finally:
        server.stop()
    assert metrics["success_rate"]["completed"] == 1
    records = [json.loads(line) for line in (logs_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["task_id"], r["status"], r["duration_seconds"]) for r in records] == [
        (task["id"], "completed", 3.5)]
