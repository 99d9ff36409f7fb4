"""GET /api/agent/metrics/timeseries and /api/agent/metrics/records over HTTP."""
from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

from app.services import record_export
from tests.support import reference
from tests.support.seed import spread_records
from tests.support import GunicornServer
from tests.support.stores import seed_metrics, stored_records

SEED_FIELDS = ("task_id", "task_type", "model", "duration_seconds", "status", "created_at")
CSV_HEADER = ("task_id,task_type,model,duration_seconds,status,created_at,attempts,"
              "wait_seconds,input_tokens,output_tokens,cache_read_input_tokens,"
              "cache_creation_input_tokens,cost_usd,prompt_variant,skill_version,executor")
"""The seed's columns, then the optional ones in the documented order."""


@pytest.fixture
def seeded(logs_dir: Path, clock) -> list[dict]:
    """A store of records over the last 40 days; the records the metrics count."""
    seed_metrics(logs_dir, spread_records(clock(), 300, days=40))
    return stored_records(logs_dir)


def normalized(record: dict) -> dict:
    """A stored record as the export writes it: created_at in UTC with its offset."""
    created = datetime.fromisoformat(record["created_at"])
    created = created if created.tzinfo else created.replace(tzinfo=timezone.utc)
    return {**record, "duration_seconds": float(record["duration_seconds"]),
            "created_at": created.astimezone(timezone.utc).isoformat()}


@pytest.mark.parametrize("window_days", [1, 7, 30])
def test_timeseries_agrees_with_the_aggregates(client, seeded, clock, window_days) -> None:
    body = client.get(f"/api/agent/metrics/timeseries?window_days={window_days}").json
    aggregates = client.get(f"/api/agent/metrics?window_days={window_days}").json
    assert body["window_days"] == window_days
    assert body["bucket"] == ("hour" if window_days == 1 else "day")
    assert body["series"] == reference.timeseries(seeded, clock(), window_days, body["bucket"])
    series = body["series"]
    assert sum(p["completed"] for p in series) == aggregates["success_rate"]["completed"]
    assert sum(p["failed"] for p in series) == aggregates["success_rate"]["failed"]
    starts = [p["start"] for p in series]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)


def test_timeseries_of_one_bucket_has_the_windows_percentiles(client, clock) -> None:
    for n, duration in enumerate([1, 2, 3, 50, 100]):
        task_id = client.post("/api/agent/tasks", json={"direction": "d", "task_type": "impl"})
        client.patch(f"/api/agent/tasks/{task_id.json['id']}",
                     json={"status": "completed" if n else "failed", "duration_seconds": duration})
    clock.advance(days=1, minutes=-1)
    [point] = [p for p in client.get("/api/agent/metrics/timeseries?window_days=2&bucket=day")
               .json["series"] if p["completed"] + p["failed"]]
    times = client.get("/api/agent/metrics?window_days=2").json["execution_time"]
    assert (point["completed"], point["failed"]) == (4, 1)
    assert (point["p50_seconds"], point["p95_seconds"]) == (3, 100)
    assert (point["p50_seconds"], point["p95_seconds"]) == (times["p50_seconds"],
                                                            times["p95_seconds"])


def test_timeseries_defaults_to_the_configured_window(client) -> None:
    body = client.get("/api/agent/metrics/timeseries").json
    assert (body["window_days"], body["bucket"]) == (7, "day")
    assert len(body["series"]) == 8


@pytest.mark.parametrize("query", ["bucket=week", "bucket=", "window_days=0",
                                   "window_days=366", "window_days=x", "other=1"])
def test_timeseries_rejects_bad_parameters(client, query) -> None:
    response = client.get(f"/api/agent/metrics/timeseries?{query}")
    assert response.status_code == 422
    assert response.json["detail"] and response.json["errors"]


def test_jsonl_export_is_every_counted_record(client, seeded) -> None:
    response = client.get("/api/agent/metrics/records?format=jsonl")
    assert response.status_code == 200
    assert response.mimetype == "application/x-ndjson"
    assert response.headers["Content-Disposition"] == 'attachment; filename="metric-records.jsonl"'
    exported = [json.loads(line) for line in response.data.decode().splitlines()]
    assert exported == [normalized(record) for record in seeded]


def test_csv_export_has_a_header_and_the_same_records(client, seeded) -> None:
    response = client.get("/api/agent/metrics/records?format=csv")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert 'filename="metric-records.csv"' in response.headers["Content-Disposition"]
    text = response.data.decode()
    assert text.splitlines()[0] == CSV_HEADER
    rows = list(csv.DictReader(io.StringIO(text)))
    expected = [normalized(record) for record in seeded]
    assert [{name: float(value) if name == "duration_seconds" else value
             for name, value in row.items() if name in SEED_FIELDS} for row in rows] == expected
    # The seeded records carry none of the optional fields: those cells are empty.
    assert {value for row in rows for name, value in row.items()
            if name not in SEED_FIELDS} == {""}


def test_export_of_an_empty_store(client) -> None:
    assert client.get("/api/agent/metrics/records").data == b""
    csv_text = client.get("/api/agent/metrics/records?format=csv").data.decode()
    assert csv_text == f"{CSV_HEADER}\r\n"


def test_filters_match_the_aggregates_window(client, seeded, clock) -> None:
    since = (clock() - timedelta(days=7)).isoformat()
    exported = [json.loads(line) for line in
                client.get("/api/agent/metrics/records", query_string={"since": since})
                .data.decode().splitlines()]
    aggregates = client.get("/api/agent/metrics?window_days=7").json
    assert len(exported) == aggregates["success_rate"]["total"]
    assert sum(r["status"] == "failed" for r in exported) == aggregates["success_rate"]["failed"]
    per_type = {}
    for record in exported:
        per_type[record["task_type"]] = per_type.get(record["task_type"], 0) + 1
    assert per_type == {name: row["count"] for name, row in aggregates["by_task_type"].items()}


def test_filters_combine(client, seeded, clock) -> None:
    since = clock() - timedelta(days=20)
    until = clock() - timedelta(days=3)
    query = {"since": since.replace(tzinfo=None).isoformat(), "until": until.isoformat(),
             "task_type": "impl", "model": "cursor/auto", "status": "completed"}
    exported = [json.loads(line) for line in
                client.get("/api/agent/metrics/records", query_string=query)
                .data.decode().splitlines()]
    expected = [
        normalized(r) for r in seeded
        if r["task_type"] == "impl" and r["model"] == "cursor/auto"
        and r["status"] == "completed"
        and since <= datetime.fromisoformat(normalized(r)["created_at"]) < until
    ]
    assert exported == expected and expected


@pytest.mark.parametrize("query", [
    "format=xml", "since=yesterday", "until=2026-13-01",
    "since=2026-03-02&until=2026-03-01", "status=running", "limit=3",
])
def test_export_rejects_bad_parameters(client, query) -> None:
    response = client.get(f"/api/agent/metrics/records?{query}")
    assert response.status_code == 422
    assert response.json["errors"]


def test_export_streams_in_chunks(client, logs_dir, clock, monkeypatch) -> None:
    seed_metrics(logs_dir, spread_records(clock(), 500, days=3), noise=False)
    monkeypatch.setattr(record_export, "CHUNK_BYTES", 1000)
    response = client.get("/api/agent/metrics/records?format=csv")
    assert response.is_streamed
    chunks = [chunk for chunk in response.response if chunk]
    assert len(chunks) > 10
    assert all(chunk.endswith(b"\r\n") for chunk in chunks)
    assert len(b"".join(chunks).decode().splitlines()) == 501


HOSTILE_CELLS = ["=cmd|' /C calc'!A0", "+HYPERLINK(\"http://x\")", "@SUM(1+1)*cmd|' /C calc'!A0",
                 "-2+3", "\tTAB", "\rCR", "plain", "mid=dle"]


def test_csv_export_neutralises_formulas_through_gunicorn(logs_dir, clock) -> None:
    records = [{"task_id": cell, "task_type": "impl", "model": cell, "duration_seconds": 1,
                "status": "completed", "created_at": clock().isoformat()}
               for cell in HOSTILE_CELLS]
    seed_metrics(logs_dir, records, noise=False)
    server = GunicornServer(logs_dir).start()
    try:
        exported = requests.get(f"{server.base_url}/api/agent/metrics/records?format=csv",
                                timeout=30)
        as_jsonl = requests.get(f"{server.base_url}/api/agent/metrics/records", timeout=30)
    finally:
        server.stop()
    rows = list(csv.DictReader(io.StringIO(exported.text, newline="")))
    expected = [f"'{cell}" if cell[0] in "=+-@\t\r" else cell for cell in HOSTILE_CELLS]
    assert [row["task_id"] for row in rows] == expected
    assert [row["model"] for row in rows] == expected
    # JSON Lines is data, not a spreadsheet: it keeps the values as they are.
    assert [json.loads(line)["task_id"] for line in as_jsonl.text.splitlines()] == HOSTILE_CELLS


def test_a_created_at_out_of_range_is_skipped_and_the_export_is_whole(logs_dir, clock) -> None:
    good = spread_records(clock(), 3000, days=3)
    strange = [{**good[0], "task_id": f"far-{n}", "created_at": stamp} for n, stamp in enumerate(
        ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])]
    seed_metrics(logs_dir, good[:1500] + strange + good[1500:], noise=False)
    server = GunicornServer(logs_dir).start()
    try:
        exports = {fmt: requests.get(
            f"{server.base_url}/api/agent/metrics/records?format={fmt}", timeout=30)
            for fmt in ("jsonl", "csv")}
        aggregates = requests.get(f"{server.base_url}/api/agent/metrics?window_days=365",
                                  timeout=30).json()
    finally:
        server.stop()
    assert len(exports["jsonl"].text.splitlines()) == len(good)
    assert len(exports["csv"].text.splitlines()) == len(good) + 1
    assert aggregates["success_rate"]["total"] == len(good)
