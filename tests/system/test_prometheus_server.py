"""The shipped alert rules and Grafana panels against the real thing: a Prometheus server
(Debian's package) scraping a real gunicorn with the shipped scrape configuration, while a
real runner runs tasks. Every alert expression and every panel query must parse, run and
give the series this test expects; the alert the test provokes (a burst of failures of
one task type) must fire, and the others must stay silent over series that exist."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.servers import stop_process
from tests.support import ROOT
from tests.support.prometheus import PrometheusServer
from tests.support.runner import wait_for
from tests.system.test_queue_control import Service, ended, serve, sh

pytestmark = pytest.mark.backend("jsonl")

USAGE = {"input_tokens": 1000, "output_tokens": 200, "cost_usd": 0.05}
ROUTING: dict[str, Any] = {
    "impl": {"model": "local/broken", "tier": "local",
             "command": sh(f"sleep 0.3; echo '::usage:: {json.dumps(USAGE)}'; exit 1",
                           "--", "{direction}")},
    "spec": {"model": "cloud/steady", "tier": "cloud",
             "command": sh(f"sleep 0.3; echo '::usage:: {json.dumps(USAGE)}'",
                           "--", "{direction}")},
}
PROVOKED = ("AgentTaskSuccessRateLow", {"task_type": "impl"})
WITNESSES = {
    "AgentTaskSuccessRateLow": "agent_tasks_finished_total",
    "AgentTaskStuckRunning": "agent_tasks_running_stale_seconds",
    "AgentQueueWaitHigh": "agent_task_queue_wait_seconds_bucket",
    "AgentQueueStalled": "agent_tasks_current",
    "AgentStoreNotWritable": "agent_store_writable",
    "AgentServiceDown": 'up{job="agent-tasks"}',
}
"""For each alert, a series it reads: an alert that stays silent must do so over data."""


@pytest.fixture
def stack(tmp_path: Path, logs_dir: Path) -> Iterator[tuple[Service, PrometheusServer]]:
    server = serve(tmp_path, logs_dir, ROUTING)
    prometheus = PrometheusServer(tmp_path / "prometheus", f"127.0.0.1:{server.port}")
    try:
        yield Service(server, logs_dir, tmp_path), prometheus.start()
    finally:
        prometheus.stop()
        server.stop()


def alert_rules() -> dict[str, str]:
    groups = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads((ROOT / "deploy/grafana/agent-tasks.json").read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"]
            for target in panel["targets"]]


def run_all(service: Service, task_types: list[str]) -> None:
    tasks = [service.create("d", task_type) for task_type in task_types]
    for task in tasks:
        wait_for(lambda: ended(service, task["id"]), f"task {task['id']} to end")


def test_alerts_and_panels_run_on_a_real_prometheus(stack) -> None:
    service, prometheus = stack
    assert alert_rules().keys() == WITNESSES.keys()
    runner = service.runner("runner")
    try:
        # One task of each type first, so each counter has a sample before the burst
        # (increase() counts from a series' first sample on).
        run_all(service, ["spec", "impl"])
        wait_for(lambda: len(prometheus.query("agent_tasks_finished_total")) == 2,
                 "Prometheus to scrape the first two records")
        run_all(service, ["impl"] * 6 + ["spec"] * 2)
        wait_for(lambda: any(alert["alertname"] == PROVOKED[0]
                             and alert.items() >= PROVOKED[1].items()
                             for alert in prometheus.firing()),
                 f"{PROVOKED[0]} to fire", timeout=60)
    finally:
        stop_process(runner, grace_seconds=20)

    for name, expr in alert_rules().items():
        assert prometheus.query(WITNESSES[name]), f"no series for {name} to read"
        found = [result["metric"] for result in prometheus.query(expr)]
        if name == PROVOKED[0]:
            assert [labels["task_type"] for labels in found] == ["impl"], found
        else:
            assert found == [], (name, found)
    for title, expr in panel_queries():
        assert prometheus.query(expr), f"panel {title!r}: {expr} gives no series"

    def tokens() -> dict[str, float]:
        return {result["metric"]["kind"]: float(result["value"][1]) for result in
                prometheus.query("sum by (kind) (agent_task_tokens_total)")}
    # Every one of the 10 tasks reported its usage; the last may need one more scrape.
    wait_for(lambda: tokens() == {"input": 10 * 1000, "output": 10 * 200},
             "Prometheus to scrape the tokens of all 10 tasks", timeout=30)
