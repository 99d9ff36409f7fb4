"""What tasks used, end to end on both backends: a real gunicorn, a real runner process and
small ``sh`` programs in place of the model CLIs. A Claude Code result object and a
``::usage::`` line each give a record with tokens and cost; prices in the routing file
give the cost when the output gives none; a command that says nothing of its usage leaves
a record without it, counted as before. The aggregates and ``/metrics`` show the sums."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.system.test_queue_control import Service, ended, records_of, serve, sh
from tests.support.runner import wait_for
from bench.servers import stop_process

RESULT = {"type": "result", "subtype": "success", "is_error": False, "result": "Done.",
          "total_cost_usd": 0.0421,
          "usage": {"input_tokens": 1200, "output_tokens": 340,
                    "cache_read_input_tokens": 5000, "cache_creation_input_tokens": 80}}
USAGE_LINE = {"input_tokens": 900, "output_tokens": 100, "cost_usd": 0.013}
PRICED = {"input_tokens": 2_000_000, "output_tokens": 500_000}
PRICES = {"input_per_mtok": 0.8, "output_per_mtok": 4}
ROUTING: dict[str, Any] = {
    "spec": {"model": "cloud/claude-like", "tier": "cloud",
             "command": sh(f"echo working; echo '{json.dumps(RESULT)}'", "--", "{direction}")},
    "test": {"model": "local/usage-line", "tier": "local",
             "command": sh(f"echo '::usage:: {json.dumps(USAGE_LINE)}'", "--", "{direction}")},
    "impl": {"model": "local/priced", "tier": "local",
             "command": sh(f"echo '::usage:: {json.dumps(PRICED)}'; exit 1",
                           "--", "{direction}")},
    "review": {"model": "local/silent", "tier": "local",
               "command": sh("echo reviewed", "--", "{direction}")},
    "prices": {"local/priced": PRICES},
}


@pytest.fixture
def service(tmp_path: Path, logs_dir: Path) -> Iterator[Service]:
    server = serve(tmp_path, logs_dir, ROUTING)
    yield Service(server, logs_dir, tmp_path)
    server.stop()


def test_records_carry_what_each_command_used(service: Service) -> None:
    tasks = {task_type: service.create("d", task_type, context={"prompt_variant": "v2"})
             for task_type in ("spec", "test", "impl", "review")}
    runner = service.runner("runner", "--executor", "build-host-7")
    try:
        for task in tasks.values():
            wait_for(lambda: ended(service, task["id"]), f"task {task['id']} to end")
    finally:
        stop_process(runner, grace_seconds=20)
    records = {task_type: records_of(service, task["id"])
               for task_type, task in tasks.items()}
    assert all(len(found) == 1 for found in records.values()), records
    spec, test, impl, review = (records[name][0] for name in ("spec", "test", "impl", "review"))

    assert {key: spec.get(key) for key in (*RESULT["usage"], "cost_usd")} == {
        **RESULT["usage"], "cost_usd": RESULT["total_cost_usd"]}
    assert {key: test.get(key) for key in USAGE_LINE} == USAGE_LINE
    assert "cache_read_input_tokens" not in test
    # No cost reported: the routing file's prices give it (2 M in at 0.8, 0.5 M out at 4).
    assert impl["status"] == "failed" and impl["cost_usd"] == pytest.approx(3.6)
    assert not {"input_tokens", "output_tokens", "cost_usd"} & review.keys()
    for record in (spec, test, impl, review):
        assert record["executor"] == "build-host-7" and record["prompt_variant"] == "v2"
        assert record["attempts"] == 1 and record["wait_seconds"] >= 0

    metrics = requests.get(f"{service.api}/metrics", timeout=30).json()
    assert metrics["success_rate"]["total"] == 4
    usage = metrics["usage"]
    assert usage["tasks_with_usage"] == 3
    assert usage["input_tokens"] == 1200 + 900 + 2_000_000
    assert usage["cache_creation_input_tokens"] == 80
    assert usage["cost_usd"] == pytest.approx(0.0421 + 0.013 + 3.6)
    assert usage["cost_per_completed_task"] == pytest.approx((0.0421 + 0.013 + 3.6) / 3)
    assert metrics["by_model"]["local/silent"]["cost_usd"] is None
    assert metrics["by_prompt_variant"]["v2"]["count"] == 4
    assert metrics["by_executor"]["build-host-7"]["failed"] == 1
    assert metrics["queue_wait"]["count"] == 4

    exposition = requests.get(f"{service.server.base_url}/metrics", timeout=30).text
    assert ('agent_task_tokens_total{kind="input",model="cloud/claude-like",task_type="spec"}'
            ' 1200.0') in exposition
    assert 'agent_task_cost_usd_total{model="local/priced",task_type="impl"} 3.6' \
        in exposition
    assert 'agent_task_queue_wait_seconds_count{task_type="review"} 1.0' in exposition
