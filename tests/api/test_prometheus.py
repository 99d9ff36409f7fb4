"""GET /metrics: Prometheus text format, read back with prometheus_client's own parser."""
from __future__ import annotations

import json
import random
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
import requests
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from psycopg.types.json import Json

from app.storage.jsonl.log_reader import file_identity
from app.storage.metric_totals import DURATION_BOUNDS_SECONDS, SLOTS, WAIT_BOUNDS_SECONDS
from tests.support import reference
from tests.support.seed import spread_records, write_store
from tests.support import GunicornServer, open_app
from tests.support.stores import database_url, seed_metrics, stored_records


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
    assert {"agent_tasks_finished", "agent_task_duration_seconds", "agent_tasks_current",
            "agent_task_tokens", "agent_task_cost_usd",
            "agent_task_queue_wait_seconds"} <= set(parsed)
    for name in ("agent_tasks_finished", "agent_task_tokens", "agent_task_cost_usd",
                 "agent_task_queue_wait_seconds"):
        assert parsed[name].samples == []
    assert parsed["agent_task_tokens"].type == parsed["agent_task_cost_usd"].type == "counter"
    assert parsed["agent_task_queue_wait_seconds"].type == "histogram"


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


TOKEN_KINDS = {"input_tokens": "input", "output_tokens": "output",
               "cache_read_input_tokens": "cache_read",
               "cache_creation_input_tokens": "cache_creation"}


def usage_records(now, count: int = 300) -> list[dict]:
    """Records of which about two thirds carry usage (tokens, mostly a cost, a queue
    wait), plus some of a model that never reports any."""
    records = spread_records(now, count, days=400, usage_share=0.65, seed=11)
    bare = spread_records(now, 20, days=400, seed=12)
    return records + [{**r, "task_id": f"bare-{n}", "model": "bare-model"}
                      for n, r in enumerate(bare)]


@pytest.fixture
def usage_seeded(logs_dir: Path, clock) -> list[dict]:
    records = usage_records(clock())
    seed_metrics(logs_dir, records)
    return records


def expected_tokens(records: list[dict]) -> dict[tuple, float]:
    sums: dict[tuple, int] = {}
    for r in records:
        for name, kind in TOKEN_KINDS.items():
            if name in r:
                key = (("kind", kind), ("model", r["model"]), ("task_type", r["task_type"]))
                sums[key] = sums.get(key, 0) + r[name]
    return {key: float(total) for key, total in sums.items()}


def expected_costs(records: list[dict]) -> dict[tuple, float]:
    nanos: dict[tuple, int] = {}
    for r in records:
        if "cost_usd" in r:
            key = (("model", r["model"]), ("task_type", r["task_type"]))
            nanos[key] = nanos.get(key, 0) + round(r["cost_usd"] * 1e9)
    return {key: total / 1e9 for key, total in nanos.items()}


def test_token_and_cost_counters_equal_the_stores_sums(client, usage_seeded) -> None:
    parsed = families(client.get("/metrics").text)
    tokens = samples(parsed["agent_task_tokens"], "agent_task_tokens_total")
    assert tokens == expected_tokens(usage_seeded)
    assert {dict(labels)["kind"] for labels in tokens} == {"input", "output", "cache_read"}
    costs = samples(parsed["agent_task_cost_usd"], "agent_task_cost_usd_total")
    assert costs == expected_costs(usage_seeded)
    with_usage = {dict(labels)["model"] for labels in tokens}
    assert "bare-model" not in with_usage and "bare-model" not in {
        dict(labels)["model"] for labels in costs}
    finished = samples(parsed["agent_tasks_finished"], "agent_tasks_finished_total")
    assert "bare-model" in {dict(labels)["model"] for labels in finished}


def test_queue_wait_histogram_per_task_type(client, usage_seeded) -> None:
    waits = families(client.get("/metrics").text)["agent_task_queue_wait_seconds"]
    buckets = samples(waits, "agent_task_queue_wait_seconds_bucket")
    sums = samples(waits, "agent_task_queue_wait_seconds_sum")
    counts = samples(waits, "agent_task_queue_wait_seconds_count")
    known = [r for r in usage_seeded if "wait_seconds" in r]
    task_types = {r["task_type"] for r in known}
    assert {dict(labels)["task_type"] for labels in counts} == task_types
    for task_type in task_types:
        mine = [r["wait_seconds"] for r in known if r["task_type"] == task_type]
        labels = (("task_type", task_type),)
        expected = {str(float(b)): sum(w <= b for w in mine) for b in WAIT_BOUNDS_SECONDS}
        expected["+Inf"] = len(mine)
        got = {le: buckets[(("le", le), *labels)] for le in expected}
        assert got == {le: float(n) for le, n in expected.items()}
        assert counts[labels] == len(mine)
        assert sums[labels] == pytest.approx(sum(mine), abs=1e-6)


@pytest.mark.backend("jsonl")
def test_equal_stores_give_byte_identical_scrapes(tmp_path, clock) -> None:
    """The same records in another order (and file) give the same bytes."""
    records = usage_records(clock(), 200)
    shuffled = list(records)
    random.Random(3).shuffle(shuffled)
    texts = []
    for name, store in (("one", records), ("two", shuffled)):
        folder = tmp_path / name
        folder.mkdir()
        write_store(folder / "metrics.jsonl", store, noise=False)
        app = open_app({"AGENT_LOGS_DIR": str(folder), "AGENT_FSYNC": False})
        texts.append(app.test_client().get("/metrics").text)
    assert texts[0] == texts[1]
    assert "agent_task_tokens_total{" in texts[0]
    assert "agent_task_queue_wait_seconds_bucket{" in texts[0]


def counters(client) -> dict[tuple, float]:
    """Every sample of the metrics that may never go down (all but the gauges)."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(client.get("/metrics").text)
            if family.type in ("counter", "histogram") for sample in family.samples}


def compact(runner, keep_days: int) -> None:
    result = runner.invoke(args=["metrics", "compact", "--keep-days", str(keep_days)])
    assert result.exit_code == 0, result.output


def test_usage_series_do_not_drop_when_metrics_compact_runs(
        app, client, runner, clock, logs_dir, usage_seeded) -> None:
    before = counters(client)
    assert any(name == "agent_task_cost_usd_total" for name, _ in before)
    compact(runner, 30)
    kept = len(stored_records(logs_dir))
    assert 0 < kept < len(usage_seeded)
    assert counters(client) == before
    clock.advance(days=500)
    compact(runner, 30)  # everything now comes from the carried totals
    assert stored_records(logs_dir) == []
    assert counters(client) == before
    parsed = families(client.get("/metrics").text)
    assert samples(parsed["agent_task_tokens"], "agent_task_tokens_total") == expected_tokens(
        usage_seeded)


OLD_CARRIED = [
    {"task_type": "impl", "model": "cursor/auto", "status": "completed", "count": 4,
     "duration_us": 9_000_000, "slots": [1, 3] + [0] * (SLOTS - 2)},
]
"""Totals a compaction by the previous version carried over: no tokens, costs or waits."""


def put_carried(logs_dir: Path, carried: list[dict]) -> None:
    """Make ``carried`` what the store's compactions carried over, as a compaction by the
    previous version left it."""
    url = database_url()
    if url is None:
        path = logs_dir / "metrics.jsonl"
        companion = {"store": file_identity(path), "value": carried, "previous": None}
        (logs_dir / "metrics.jsonl.carried.json").write_text(json.dumps(companion))
        return
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE metric_compactions SET carried = %s, "
                     "generation = generation + 1", (Json(carried),))


def test_totals_carried_by_the_previous_version_still_count(
        app, client, runner, clock, logs_dir, usage_seeded) -> None:
    put_carried(logs_dir, OLD_CARRIED)
    parsed = families(client.get("/metrics").text)
    finished = samples(parsed["agent_tasks_finished"], "agent_tasks_finished_total")
    expected = reference.finished_counts(usage_seeded)
    key = ("impl", "cursor/auto", "completed")
    expected[key] = expected.get(key, 0) + 4
    assert finished == {(("model", m), ("status", s), ("task_type", t)): float(n)
                        for (t, m, s), n in expected.items()}
    assert samples(parsed["agent_task_tokens"], "agent_task_tokens_total") == expected_tokens(
        usage_seeded)
    before = counters(client)
    compact(runner, 30)
    assert counters(client) == before
