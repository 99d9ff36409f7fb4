"""GET /metrics: Prometheus text format, read back with prometheus_client's own parser."""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from app.storage.metric_totals import DURATION_BOUNDS_SECONDS
from tests.support import reference
from tests.support.seed import spread_records, write_store
from tests.support import GunicornServer, open_app
from tests.support.stores import seed_metrics, stored_records


def families(text: str) -> dict:
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(family, name: str) -> dict[tuple, float]:
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for sample in family.samples if sample.name == name
    }


@pytest.fixture
def seeded(logs_dir: Path, clock) -> list[dict]:
    seed_metrics(logs_dir, spread_records(clock(), 250, days=400))
    return stored_records(logs_dir)


def test_counter_equals_the_stores_per_label_counts(client, seeded) -> None:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
    parsed = families(response.data.decode())
    finished = parsed["agent_tasks_finished"]
    assert finished.type == "counter"
    counted = samples(finished, "agent_tasks_finished_total")
    expected = {
        (("model", model), ("status", status), ("task_type", task_type)): float(count)
        for (task_type, model, status), count in reference.finished_counts(seeded).items()
    }
    assert counted == expected
    assert sum(counted.values()) == len(seeded)


def test_histogram_buckets_sum_and_count(client, seeded) -> None:
    durations = families(client.get("/metrics").data.decode())["agent_task_duration_seconds"]
    assert durations.type == "histogram"
    buckets = samples(durations, "agent_task_duration_seconds_bucket")
    sums = samples(durations, "agent_task_duration_seconds_sum")
    counts = samples(durations, "agent_task_duration_seconds_count")
    pairs = {(r["task_type"], r["model"]) for r in seeded}
    assert len(counts) == len(pairs)
    for task_type, model in pairs:
        labels = (("model", model), ("task_type", task_type))
        expected = reference.histogram(seeded, task_type, model, list(DURATION_BOUNDS_SECONDS))
        got = {le: buckets[tuple(sorted((*labels, ("le", le))))] for le in expected["buckets"]}
        assert got == {le: float(n) for le, n in expected["buckets"].items()}
        assert counts[labels] == expected["count"]
        assert sums[labels] == pytest.approx(expected["sum"], abs=1e-6)


def test_queue_gauges_follow_the_task_store(client) -> None:
    ids = [client.post("/api/agent/tasks", json={"direction": "d", "task_type": "impl"}).json["id"]
           for _ in range(6)]
    client.patch(f"/api/agent/tasks/{ids[0]}", json={"status": "running"})
    client.patch(f"/api/agent/tasks/{ids[1]}", json={"status": "running"})
    client.patch(f"/api/agent/tasks/{ids[2]}",
                 json={"status": "needs_decision", "decision_prompt": "which way?"})
    client.patch(f"/api/agent/tasks/{ids[3]}", json={"status": "completed"})
    gauge = families(client.get("/metrics").data.decode())["agent_tasks_current"]
    assert gauge.type == "gauge"
    assert {s.labels["status"]: s.value for s in gauge.samples} == {
        "pending": 2, "running": 2, "needs_decision": 1,
    }
    finished = families(client.get("/metrics").data.decode())["agent_tasks_finished"]
    assert [s.value for s in finished.samples] == [1]


def test_an_empty_store_still_describes_every_metric(client) -> None:
    parsed = families(client.get("/metrics").data.decode())
    assert {"agent_tasks_finished", "agent_task_duration_seconds",
            "agent_tasks_current"} <= set(parsed)
    assert parsed["agent_tasks_finished"].samples == []


@pytest.mark.backend("jsonl")
def test_each_app_has_its_own_registry(logs_dir, tmp_path, clock) -> None:
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    write_store(other_dir / "metrics.jsonl", spread_records(clock(), 5, days=1), noise=False)
    first = open_app({"AGENT_LOGS_DIR": str(logs_dir), "AGENT_FSYNC": False})
    second = open_app({"AGENT_LOGS_DIR": str(other_dir), "AGENT_FSYNC": False})
    empty = families(first.test_client().get("/metrics").data.decode())
    full = families(second.test_client().get("/metrics").data.decode())
    assert empty["agent_tasks_finished"].samples == []
    assert sum(s.value for s in full["agent_tasks_finished"].samples) == 5


def test_every_gunicorn_worker_gives_the_same_scrape(logs_dir, clock) -> None:
    seed_metrics(logs_dir, spread_records(clock(), 200, days=30))
    server = GunicornServer(
        logs_dir, workers=3,
        env={"GUNICORN_CMD_ARGS": "--access-logformat '%(p)s %(m)s %(U)s %(s)s'"},
    ).start()
    try:
        base = server.base_url
        task = requests.post(f"{base}/api/agent/tasks",
                             json={"direction": "d", "task_type": "heal"}, timeout=10).json()
        assert requests.patch(f"{base}/api/agent/tasks/{task['id']}",
                              json={"status": "failed", "duration_seconds": 7}, timeout=10).ok
        with ThreadPoolExecutor(max_workers=8) as pool:
            scrapes = list(pool.map(lambda _: requests.get(f"{base}/metrics", timeout=30),
                                    range(48)))
    finally:
        server.stop()
    assert {r.status_code for r in scrapes} == {200}
    assert len({r.text for r in scrapes}) == 1
    records = stored_records(logs_dir)
    counted = samples(families(scrapes[0].text)["agent_tasks_finished"],
                      "agent_tasks_finished_total")
    assert sum(counted.values()) == len(records) == 201
    access = server.log_path.read_text()
    pids = set(re.findall(r"^<(\d+)> GET /metrics 200", access, re.M))
    assert len(pids) >= 2, "the scrapes should have reached more than one worker"


def test_label_values_are_bounded_whatever_the_store_holds(logs_dir, clock) -> None:
    """20,000 distinct short models and some 60 kB ones, written into the store by hand:
    the scrape keeps AGENT_METRICS_MAX_MODELS model values and counts everything."""
    now = clock()
    records = [{"task_id": f"short-{n}", "task_type": "impl", "model": f"model-{n}",
                "duration_seconds": 1.0, "status": "completed",
                "created_at": now.isoformat()} for n in range(20_000)]
    records += [{"task_id": f"popular-{n}", "task_type": "spec", "model": "popular",
                 "duration_seconds": 2.0, "status": "failed",
                 "created_at": now.isoformat()} for n in range(50)]
    records += [{"task_id": f"long-{n}", "task_type": "x" * 300, "model": "L" * 60_000 + str(n),
                 "duration_seconds": 3.0, "status": "completed",
                 "created_at": now.isoformat()} for n in range(200)]
    seed_metrics(logs_dir, records, noise=False)
    server = GunicornServer(logs_dir, env={"AGENT_METRICS_MAX_MODELS": "10"}).start()
    try:
        scrape = requests.get(f"{server.base_url}/metrics", timeout=60)
    finally:
        server.stop()
    assert scrape.status_code == 200 and len(scrape.content) < 100_000
    parsed = families(scrape.text)
    counted = samples(parsed["agent_tasks_finished"], "agent_tasks_finished_total")
    models = {dict(labels)["model"] for labels in counted}
    assert len(models) == 10 and {"popular", "other"} <= models
    assert sum(counted.values()) == len(records)
    assert counted[(("model", "popular"), ("status", "failed"), ("task_type", "spec"))] == 50
    everything = [value for family in parsed.values() for sample in family.samples
                  for value in sample.labels.values()]
    assert max(map(len, everything)) <= 200
    assert {dict(labels)["task_type"] for labels in counted} == {"impl", "spec", "other"}


def test_few_models_keep_their_labels(client, seeded) -> None:
    counted = samples(families(client.get("/metrics").text)["agent_tasks_finished"],
                      "agent_tasks_finished_total")
    assert "other" not in {dict(labels)["model"] for labels in counted}
