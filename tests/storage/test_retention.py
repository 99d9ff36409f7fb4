"""Compaction of both stores: what is kept, and that concurrent writers and running
servers lose nothing, double nothing and notice the new file."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from app.clock import isoformat
from app.storage.metric_totals import finished_counts
from app.storage.jsonl.log_writer import JsonlLog
from tests.support.processes import spawn
from tests.support.stores import seed_lines, stored_records, stored_task_ids
from tests.support import GunicornServer, ROOT, poll

WAIT = 120


def write_lines(path: Path, lines: list[object]) -> None:
    with open(path, "a") as handle:
        for line in lines:
            handle.write((line if isinstance(line, str) else json.dumps(line)) + "\n")


def metric(task_id: str, created_at: str) -> dict:
    return {"task_id": task_id, "task_type": "impl", "model": "m", "duration_seconds": 2.0,
            "status": "completed", "created_at": created_at}


def stored(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def days_ago(now: datetime, days: float) -> str:
    return isoformat(now - timedelta(days=days))


@pytest.mark.backend("jsonl")
def test_metrics_compaction_keeps_recent_valid_records(app, clock, logs_dir, caplog) -> None:
    path = logs_dir / "metrics.jsonl"
    write_lines(path, [
        metric("old", days_ago(clock.now, 31)),
        metric("recent", days_ago(clock.now, 29)),
        metric("naive-recent", days_ago(clock.now, 1)[:-6]),
        metric("bad-time", "yesterday-ish"),
        metric("recent", days_ago(clock.now, 1)),
        "{torn",
        {"task_id": "no-fields"},
    ])
    caplog.set_level(logging.INFO)
    report = app.extensions["agent"].metrics.compact(30)
    assert [r["task_id"] for r in stored(path)] == ["recent", "naive-recent"]
    assert (report.kept, report.expired, report.invalid) == (2, 1, 4)
    assert "kept 2, dropped 1 older than the cutoff, 0 superseded, 4 invalid" in caplog.text
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~current_umask())
    assert app.test_client().get("/api/agent/metrics?window_days=365").json[
        "success_rate"]["total"] == 2


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.backend("jsonl")
def test_tasks_compaction_keeps_latest_states_and_unfinished_tasks(app, client, clock,
                                                                   logs_dir) -> None:
    def task(status: str) -> str:
        task_id = client.post("/api/agent/tasks",
                              json={"direction": status, "task_type": "impl"}).json["id"]
        if status != "pending":
            moved = client.patch(f"/api/agent/tasks/{task_id}", json={"status": status})
            assert moved.status_code == 200
        return task_id

    old_done, old_pending, old_waiting = task("completed"), task("pending"), task("running")
    clock.advance(days=10)
    recent_failed = task("failed")
    write_lines(logs_dir / "tasks.jsonl", ["not json", {"id": 5, "status": "pending"},
                                           {"id": ["a", "list"], "status": "failed"}])
    client.get("/api/agent/tasks")

    report = app.extensions["agent"].tasks.compact(7)
    kept = stored(logs_dir / "tasks.jsonl")
    assert sorted(t["id"] for t in kept) == sorted([old_pending, old_waiting, recent_failed])
    assert {t["id"]: t["status"] for t in kept}[old_waiting] == "running"
    # superseded: a line per status change, and the "recorded" mark of each final task
    assert (report.kept, report.expired, report.superseded, report.invalid) == (3, 1, 5, 3)
    listed = client.get("/api/agent/tasks").json
    assert listed["total"] == 3 and old_done not in [t["id"] for t in listed["tasks"]]


def flask_cli(logs_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "AGENT_LOGS_DIR": str(logs_dir), "AGENT_FSYNC": "0"}
    return subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=WAIT)


def stored_task(task_id: str, status: str, updated_at: str) -> dict:
    return {"id": task_id, "direction": "d", "task_type": "impl", "status": status,
            "model": "m", "command": "c", "context": {}, "output": None,
            "created_at": updated_at, "updated_at": updated_at, "started_at": None,
            "duration_seconds": None}


def test_compact_commands_and_a_running_server_notices(logs_dir: Path) -> None:
    now = datetime.now(timezone.utc)
    seed_lines(logs_dir, "metrics.jsonl", [metric("a", days_ago(now, 40)),
                                           metric("b", days_ago(now, 20)),
                                           metric("c", days_ago(now, 1))])
    seed_lines(logs_dir, "tasks.jsonl", [
        stored_task("t1", "completed", days_ago(now, 40)),
        stored_task("t2", "pending", days_ago(now, 40)),
        stored_task("t3", "failed", days_ago(now, 1)),
    ])
    server = GunicornServer(logs_dir).start()
    tasks_url = f"{server.base_url}/api/agent/tasks"
    try:
        for _ in range(4):
            assert requests.get(tasks_url, timeout=WAIT).json()["total"] == 3
        done = flask_cli(logs_dir, "metrics", "compact")
        assert done.returncode == 0, done.stderr
        assert "kept 2" in done.stdout
        assert [r["task_id"] for r in stored_records(logs_dir)] == ["b", "c"]
        done = flask_cli(logs_dir, "metrics", "compact", "--keep-days", "7")
        assert done.returncode == 0 and "kept 1" in done.stdout
        assert [r["task_id"] for r in stored_records(logs_dir)] == ["c"]
        done = flask_cli(logs_dir, "tasks", "compact", "--keep-days", "10")
        assert done.returncode == 0, done.stderr
        assert stored_task_ids(logs_dir) == ["t2", "t3"]
        for _ in range(4):
            listed = requests.get(tasks_url, timeout=WAIT).json()
            assert sorted(t["id"] for t in listed["tasks"]) == ["t2", "t3"]
        refused = flask_cli(logs_dir, "tasks", "compact", "--keep-days", "-1")
        assert refused.returncode != 0 and "keep-days" in refused.stderr
    finally:
        server.stop()


@pytest.mark.backend("jsonl")
def test_compaction_under_concurrent_writers_loses_and_doubles_nothing(logs_dir: Path) -> None:
    """8 processes record tasks without pause, killed at the end; compaction runs three
    times meanwhile, and a running gunicorn reads before and after."""
    now = datetime.now(timezone.utc)
    metrics_path = logs_dir / "metrics.jsonl"
    write_lines(metrics_path, [metric(f"expired-{n}", days_ago(now, 45)) for n in range(50)])
    server = GunicornServer(logs_dir, env={"AGENT_FSYNC": "0"}).start()
    aggregates = f"{server.base_url}/api/agent/metrics?window_days=365"
    try:
        for _ in range(4):
            assert requests.get(aggregates, timeout=WAIT).json()["success_rate"]["total"] == 50
        writers = [spawn("record", str(logs_dir), f"w{n}", "0",
                         env={**os.environ, "AGENT_FSYNC": "0"}) for n in range(8)]
        acknowledged = [writer.stdout.readline().strip() for writer in writers]
        for _ in range(3):
            done = flask_cli(logs_dir, "metrics", "compact", "--keep-days", "30")
            assert done.returncode == 0, done.stderr
        for writer in writers:
            writer.kill()
        for writer in writers:
            # Read through the buffered pipe readline() used (communicate() would skip
            # what it buffered); the piece after the last newline was cut by the kill.
            out = writer.stdout.read()
            writer.wait(timeout=WAIT)
            acknowledged += out.split("\n")[:-1]
        assert len(acknowledged) > 8 and len(acknowledged) == len(set(acknowledged))

        counts = Counter(r["task_id"] for r in stored(metrics_path))
        assert set(acknowledged) <= set(counts)
        assert not any(task_id.startswith("expired-") for task_id in counts)
        assert max(counts.values()) == 1
        for _ in range(4):
            body = requests.get(aggregates, timeout=WAIT).json()
            assert body["success_rate"]["total"] == len(counts)
    finally:
        server.stop()


@pytest.mark.backend("jsonl")
def test_compaction_keeps_a_last_record_written_without_its_newline(app, clock, logs_dir) -> None:
    path = logs_dir / "metrics.jsonl"
    write_lines(path, [metric("first", days_ago(clock.now, 1))])
    with open(path, "a") as handle:
        handle.write(json.dumps(metric("no-newline", days_ago(clock.now, 1))))
    report = app.extensions["agent"].metrics.compact(30)
    assert [r["task_id"] for r in stored(path)] == ["first", "no-newline"]
    assert (report.kept, report.invalid) == (2, 0)
    with open(path, "a") as handle:
        handle.write('{"task_id": "torn')
    assert app.extensions["agent"].metrics.compact(30).invalid == 1
    assert path.read_bytes().endswith(b"\n")


def scrape_counters(client) -> dict:
    families = text_string_to_metric_families(client.get("/metrics").text)
    return {(family.name, sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in families for sample in family.samples
            if family.name in ("agent_tasks_finished", "agent_task_duration_seconds")}


def test_counters_do_not_go_down_when_records_are_compacted(app, client, clock,
                                                            logs_dir) -> None:
    seed_lines(logs_dir, "metrics.jsonl", [
        {**metric(f"old{n}", days_ago(clock.now, 40 + n)), "duration_seconds": 10 ** (n % 5),
         "status": "failed" if n % 3 else "completed", "model": f"m{n % 2}"}
        for n in range(30)
    ] + [metric(f"new{n}", days_ago(clock.now, 1)) for n in range(5)])
    metrics = app.extensions["agent"].metrics
    before, counters = metrics.totals(), scrape_counters(client)
    assert metrics.compact(30).expired == 30
    assert len(stored_records(logs_dir)) == 5
    assert metrics.totals() == before
    assert scrape_counters(client) == counters
    metrics.record_task("later", "impl", "m", 2.0, "completed")
    clock.advance(days=45)
    assert metrics.compact(30).expired == 6
    after = metrics.totals()
    assert sum(finished_counts(after).values()) == 36 and not stored_records(logs_dir)
    assert finished_counts(after)[("impl", "m", "completed")] == 6


def test_carried_totals_match_the_file_a_reader_follows(tmp_path: Path) -> None:
    log = JsonlLog(tmp_path / "s.jsonl")
    log.append([{"n": 1}])
    log.rewrite(lambda records: records, carry=lambda before: "first")
    reader = log.reader()
    list(poll(reader))
    assert log.carried() == log.carried(reader) == "first"
    log.rewrite(lambda records: records, carry=lambda before: f"{before}+second")
    assert log.carried() == "first+second"
    assert log.carried(reader) == "first"  # still on the file the first value belongs to
    list(poll(reader))
    assert log.carried(reader) == "first+second"
    companion = json.loads(log.carried_path.read_text())
    log.carried_path.write_text(json.dumps({**companion, "store": [0, 0]}))
    assert log.carried() == "first"  # written for a file that never took the store's place


@pytest.mark.backend("jsonl")
def test_the_next_compaction_removes_what_a_killed_one_left(logs_dir: Path) -> None:
    """A compaction killed between writing its temporary file and the rename leaves the
    file behind; the next one (of that store) removes it, and nothing else."""
    now = datetime.now(timezone.utc)
    write_lines(logs_dir / "metrics.jsonl", [metric("kept", days_ago(now, 1))])
    leftovers = [logs_dir / ".metrics.jsonl.k2j4h1.tmp",
                 logs_dir / ".metrics.jsonl.carried.json.tmp"]
    unrelated = [logs_dir / ".tasks.jsonl.a1b2c3.tmp", logs_dir / "metrics.jsonl.tmp"]
    for path in leftovers + unrelated:
        path.write_text('{"task_id": "half-written')
    done = flask_cli(logs_dir, "metrics", "compact", "--keep-days", "30")
    assert done.returncode == 0, done.stderr
    assert not any(path.exists() for path in leftovers)
    assert all(path.exists() for path in unrelated)
    assert [r["task_id"] for r in stored(logs_dir / "metrics.jsonl")] == ["kept"]
