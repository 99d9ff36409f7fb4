"""What only the PostgreSQL backend has: its schema, copying JSONL stores in, reading
rows in commit order, SKIP LOCKED claims, one transaction per final transition, the
database going away and coming back, and a password that never shows."""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
from flask import Flask

from app.storage.postgres import metrics as pg_metrics
from app.storage.postgres import schema
from bench.postgres_server import PostgresServer
from tests.support.seed import spread_records, write_store
from tests.support import ROOT, FakeClock, free_port, open_app

pytestmark = pytest.mark.backend("postgresql")
FIXTURES = Path(__file__).parent.parent / "fixtures" / "v0.1"


def make_app(logs_dir: Path, clock: FakeClock) -> Flask:
    return open_app({"TESTING": True, "AGENT_LOGS_DIR": str(logs_dir), "CLOCK": clock,
                     "AGENT_FSYNC": False})


def flask_command(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=env)


def create(client, task_type: str = "spec") -> str:
    response = client.post("/api/agent/tasks", json={"direction": "d", "task_type": task_type})
    assert response.status_code == 201, response.json
    return response.json["id"]


def test_servers_upgrading_at_once_make_one_schema(backend, database_url) -> None:
    commands = [subprocess.Popen([sys.executable, "-m", "flask", "--app", "wsgi", "db",
                                  "upgrade"], cwd=ROOT, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True) for _ in range(4)]
    outputs = [command.communicate(timeout=120)[0] for command in commands]
    assert [command.returncode for command in commands] == [0] * 4, outputs
    assert sum("upgraded from version 0" in output for output in outputs) == 1, outputs
    assert sum("up to date" in output for output in outputs) == 3, outputs
    with psycopg.connect(database_url) as conn:
        assert schema.version(conn) == schema.LATEST
        assert conn.execute("SELECT count(*) FROM schema_version").fetchone() == (1,)


def test_an_upgrade_keeps_the_rows(backend, database_url, logs_dir, clock) -> None:
    client = make_app(logs_dir, clock).test_client()
    task_id = create(client)
    assert flask_command("db", "upgrade").returncode == 0
    assert client.get(f"/api/agent/tasks/{task_id}").json["status"] == "pending"


def test_store_copy_is_idempotent_and_resumable(backend, database_url, logs_dir, tmp_path,
                                                clock) -> None:
    source = tmp_path / "jsonl"
    shutil.copytree(FIXTURES, source)
    records = spread_records(clock(), 500, days=10)
    write_store(source / "metrics.jsonl", records)
    half = tmp_path / "half"
    half.mkdir()
    write_store(half / "metrics.jsonl", records[:250], noise=False)
    first = flask_command("store", "copy", "--from", str(half))
    assert first.returncode == 0, first.stderr
    assert "metrics: 250 copied, 0 already there" in first.stdout
    whole = flask_command("store", "copy", "--from", str(source))
    assert whole.returncode == 0, whole.stderr
    fixture_records = sum(1 for _ in (FIXTURES / "metrics.jsonl").open())
    assert f"metrics: {250 + fixture_records} copied, 250 already there" in whole.stdout
    again = flask_command("store", "copy", "--from", str(source))
    assert "metrics: 0 copied" in again.stdout and "tasks: 0 copied" in again.stdout
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM metric_records").fetchone() == (
            500 + fixture_records,)
        # Analysed by the copy itself (autovacuum would set last_autoanalyze instead).
        analysed = dict(conn.execute(
            "SELECT relname, last_analyze IS NOT NULL FROM pg_stat_user_tables "
            "WHERE relname IN ('metric_records', 'tasks', 'task_logs')"))
        assert analysed == {"metric_records": True, "tasks": True, "task_logs": True}
    jsonl = open_app({"AGENT_LOGS_DIR": str(source), "AGENT_DATABASE_URL": None,
                      "CLOCK": clock}).test_client()
    postgres = make_app(logs_dir, clock).test_client()
    for path in ("/api/agent/metrics?window_days=30", "/api/agent/tasks?limit=100",
                 "/api/agent/tasks/count"):
        assert postgres.get(path).json == jsonl.get(path).json, path


def test_a_row_committed_after_a_higher_numbered_one_is_still_counted(
    backend, database_url, logs_dir, clock
) -> None:
    client = make_app(logs_dir, clock).test_client()
    assert client.get("/api/agent/metrics").json["success_rate"]["total"] == 0
    insert = ("INSERT INTO metric_records (task_id, task_type, model, duration_seconds, "
              "status, created_at) VALUES (%s, 'impl', 'm', 1, 'completed', %s)")
    with psycopg.connect(database_url) as held, psycopg.connect(database_url) as other:
        held.execute(insert, ("early-but-slow", clock()))  # takes the lower seq, stays open
        with other.transaction():
            other.execute(insert, ("late-but-quick", clock()))
        assert client.get("/api/agent/metrics").json["success_rate"]["total"] == 1
        held.commit()
    assert client.get("/api/agent/metrics").json["success_rate"]["total"] == 2
    assert client.get("/api/agent/metrics").json["success_rate"]["total"] == 2
    with psycopg.connect(database_url) as conn:
        seqs = dict(conn.execute("SELECT task_id, seq FROM metric_records"))
    assert seqs["early-but-slow"] < seqs["late-but-quick"]


def test_a_claim_skips_a_task_another_claimer_holds(
    backend, database_url, logs_dir, clock
) -> None:
    client = make_app(logs_dir, clock).test_client()
    first, second = create(client), create(client)
    with psycopg.connect(database_url) as other:
        other.execute("SELECT 1 FROM tasks WHERE id = %s FOR UPDATE", (first,))
        started = time.monotonic()
        claimed = client.post("/api/agent/tasks/claim", json={"runner_id": "r1"})
        assert time.monotonic() - started < 2
        assert claimed.status_code == 200 and claimed.json["id"] == second
        other.rollback()
    assert client.post("/api/agent/tasks/claim",
                       json={"runner_id": "r2"}).json["id"] == first


def test_a_final_state_and_its_record_commit_together(
    backend, database_url, logs_dir, clock
) -> None:
    client = make_app(logs_dir, clock).test_client()
    task_id = create(client)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("""CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
                        $$ BEGIN RAISE EXCEPTION 'refused'; END $$""")
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON metric_records "
                     "FOR EACH ROW EXECUTE FUNCTION refuse()")
    refused = client.patch(f"/api/agent/tasks/{task_id}", json={"status": "completed"})
    assert refused.status_code == 500
    assert client.get(f"/api/agent/tasks/{task_id}").json["status"] == "pending"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP TRIGGER refuse ON metric_records")
    done = client.patch(f"/api/agent/tasks/{task_id}", json={"status": "completed"})
    assert done.status_code == 200
    assert client.get("/api/agent/metrics").json["success_rate"]["completed"] == 1
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT recorded FROM tasks").fetchone() == (True,)


def test_one_record_per_task_from_many_threads(backend, database_url, logs_dir,
                                               clock) -> None:
    app = make_app(logs_dir, clock)
    metrics = app.extensions["agent"].metrics
    results: list[bool] = []

    def record() -> None:
        results.append(metrics.record_task("same-task", "impl", "m", 1.0, "completed"))

    threads = [threading.Thread(target=record) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]
    assert metrics.get_aggregates()["success_rate"]["total"] == 1


def test_the_database_down_answers_503_and_service_resumes(
    backend, database_url, postgres_server: PostgresServer, logs_dir, clock, caplog
) -> None:
    client = make_app(logs_dir, clock).test_client()
    task_id = create(client)
    assert client.get("/api/health").json["status"] == "ok"
    postgres_server.stop()
    try:
        for response in (client.get(f"/api/agent/tasks/{task_id}"),
                         client.post("/api/agent/tasks",
                                     json={"direction": "d", "task_type": "spec"}),
                         client.patch(f"/api/agent/tasks/{task_id}",
                                      json={"status": "completed"}),
                         client.get("/api/agent/metrics")):
            assert response.status_code == 503, response.json
            assert "unavailable" in response.json["detail"]
        health = client.get("/api/health")
        assert health.status_code == 200 and health.json["status"] == "degraded"
    finally:
        postgres_server.start()
    assert client.patch(f"/api/agent/tasks/{task_id}",
                        json={"status": "completed"}).status_code == 200
    assert client.get("/api/agent/metrics").json["success_rate"]["completed"] == 1
    assert client.get("/api/health").json["status"] == "ok"


def test_the_password_never_shows(backend, database_url, postgres_server: PostgresServer,
                                  logs_dir, clock, caplog, monkeypatch) -> None:
    password = "s3cret-Pa55word-never-shown"
    postgres_server.create_role("agent_user", password)
    name = database_url.rsplit("/", 1)[1]
    with postgres_server.admin_connection() as conn:
        conn.execute(f'ALTER DATABASE "{name}" OWNER TO agent_user')
    url = postgres_server.url(name, user="agent_user", password=password)
    monkeypatch.setenv("AGENT_DATABASE_URL", url)
    caplog.set_level(logging.DEBUG)
    client = make_app(logs_dir, clock).test_client()
    create(client)
    seen = [client.get("/api/health").data, client.get("/api/agent/dashboard").data]
    postgres_server.stop()
    try:
        seen += [client.get("/api/agent/tasks").data, client.get("/api/health").data]
    finally:
        postgres_server.start()
    upgrade = flask_command("db", "upgrade")
    closed_port = url.replace(f":{postgres_server.port}/", f":{free_port()}/")
    bad = flask_command("db", "upgrade", env={**os.environ, "AGENT_DATABASE_URL": closed_port})
    assert bad.returncode != 0
    shown = b"".join(seen).decode() + caplog.text + upgrade.stdout + upgrade.stderr + \
        bad.stdout + bad.stderr
    assert "agent_user@127.0.0.1" in shown
    assert password not in shown
    assert json.loads(seen[0])["stores"]["tasks"]["path"].startswith("postgresql://agent_user@")


def _plan(conn: psycopg.Connection, horizon: int) -> str:
    """The scans of the tail query's plan, as the connection's settings make it now."""
    explained = conn.execute(f"EXPLAIN (FORMAT JSON) {pg_metrics.TAIL_QUERY}",
                             (str(horizon),)).fetchone()[0]
    return json.dumps(explained)


def test_the_tail_query_reads_the_index_on_a_table_never_analysed(
    backend, database_url, logs_dir, clock
) -> None:
    assert make_app(logs_dir, clock).test_client().get("/api/agent/metrics").status_code == 200
    with psycopg.connect(database_url) as conn:
        conn.execute("ALTER TABLE metric_records SET (autovacuum_enabled = false)")
        conn.execute(
            "INSERT INTO metric_records (task_id, task_type, model, duration_seconds, status, "
            "created_at) SELECT 't' || n, 'impl', 'm', 1, 'completed', now() "
            "FROM generate_series(1, 200000) n")
        conn.commit()
        assert conn.execute("SELECT last_analyze, last_autoanalyze FROM pg_stat_user_tables "
                            "WHERE relname = 'metric_records'").fetchone() == (None, None)
        horizon, = conn.execute(
            "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint").fetchone()
        # Left to itself, the planner reads the whole table for a handful of rows ...
        assert '"Seq Scan"' in _plan(conn, horizon)
        conn.rollback()
        # ... while read_tail reads them through the xid index.
        assert pg_metrics.read_tail(conn, horizon) == []
        plan = _plan(conn, horizon)
        assert "metric_records_xid" in plan and '"Seq Scan"' not in plan, plan
