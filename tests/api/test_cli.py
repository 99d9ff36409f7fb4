"""flask metrics show: the same aggregates as GET /api/agent/metrics, for a terminal."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone

import pytest

from tests.support.seed import spread_records
from tests.support import ROOT
from tests.support.reported import finish, finish_reported_examples, with_usage
from tests.support.stores import seed_metrics


@pytest.fixture
def seeded(logs_dir, clock) -> None:
    seed_metrics(logs_dir, spread_records(clock(), 200, days=40))


@pytest.mark.parametrize("window_days", [None, 1, 30])
def test_json_equals_the_api(runner, client, seeded, window_days) -> None:
    args = ["metrics", "show", "--json"]
    if window_days:
        args += ["--window-days", str(window_days)]
    result = runner.invoke(args=args)
    assert result.exit_code == 0, result.output
    query = f"?window_days={window_days}" if window_days else ""
    assert json.loads(result.output) == client.get(f"/api/agent/metrics{query}").json


def test_table_shows_the_same_numbers(runner, client, seeded) -> None:
    result = runner.invoke(args=["metrics", "show", "--window-days", "30"])
    assert result.exit_code == 0, result.output
    api = client.get("/api/agent/metrics?window_days=30").json
    totals, times = api["success_rate"], api["execution_time"]
    lines = result.output.splitlines()
    assert lines[0] == (f"Last 30 days: {totals['total']} finished, {totals['completed']} "
                        f"completed, {totals['failed']} failed, "
                        f"success rate {totals['rate']:.0%}")
    assert lines[1] == (f"Execution time: p50 {times['p50_seconds']} s, "
                        f"p95 {times['p95_seconds']} s")
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:] if line.strip()}
    for name, row in api["by_task_type"].items():
        assert rows[name] == [str(row["count"]), str(row["completed"]), str(row["failed"]),
                              f"{row['success_rate']:.0%}"]
    for name, row in api["by_model"].items():
        assert rows[name] == [str(row["count"]), str(row["avg_duration"])]


def test_empty_window(runner) -> None:
    result = runner.invoke(args=["metrics", "show"])
    assert result.exit_code == 0
    assert "No records in this window." in result.output


@pytest.mark.parametrize("value", ["0", "366", "x"])
def test_bad_window_is_a_usage_error(runner, value) -> None:
    result = runner.invoke(args=["metrics", "show", "--window-days", value])
    assert result.exit_code == 2
    assert "--window-days" in result.output


def test_the_installed_command(logs_dir) -> None:
    """``flask --app wsgi metrics show`` as an operator runs it, store from the environment."""
    seed_metrics(logs_dir,
                 spread_records(datetime.now(timezone.utc), 200, days=20))
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "metrics", "show", "--json",
         "--window-days", "30"],
        cwd=ROOT, env={**os.environ, "AGENT_LOGS_DIR": str(logs_dir)},
        capture_output=True, text=True, timeout=120, check=True,
    )
    assert json.loads(result.stdout)["success_rate"]["total"] == 200


# The human output's queue wait, tokens and cost (see also tests/system/test_dashboard.py).

def usage_lines(output: str) -> list[str]:
    """The lines after the execution time, up to the first table."""
    return output.split("\n\n")[0].splitlines()[2:]


def usage_table(output: str, label: str) -> dict[str, list[str]]:
    """The rows of the cost-and-tokens table whose first column is ``label``."""
    block = next(block for block in output.split("\n\n")
                 if block.startswith(f"{label} ") and " cost " in block.splitlines()[0])
    return {line.split()[0]: line.split()[1:] for line in block.splitlines()[2:]
            if not line.startswith("(")}


def test_usage_of_reported_tasks(runner, client, clock) -> None:
    """Tasks run through the API with usage reports: the sums in human units, and
    "unknown" or "-" for what no record carries, never 0."""
    finish_reported_examples(client, clock)
    result = runner.invoke(args=["metrics", "show"])
    assert result.exit_code == 0, result.output
    assert usage_lines(result.output) == [
        "Queue wait: p50 30 s, p95 10 min (creation to first claim, over 4 tasks)",
        "Tokens: input 1.4M, output 37k, cache read 250k, cache written unknown "
        "(3 tasks reported tokens or a cost)",
        "Cost: $5.50, $1.83 per completed task",
    ]
    assert usage_table(result.output, "task type") == {
        "heal": ["-", "-", "-"], "impl": ["$5.50", "1.4M", "35k"], "review": ["-", "40k", "2k"]}
    assert usage_table(result.output, "model") == {
        "claude-3-5-haiku-20241022": ["-", "-", "-"],
        "ollama/glm-4.7-flash:latest": ["$5.50", "1.4M", "37k"]}
    assert "(-: no record of this task type in the window carries it)" in result.output
    assert "(-: no record of this model in the window carries it)" in result.output
    blocks = result.output.rstrip("\n").split("\n\n")
    assert blocks[-2].startswith("task type  count  completed  failed  success rate")
    assert blocks[-1].startswith("model  ") and "avg duration (s)" in blocks[-1]


def test_cost_without_a_completed_task(runner, client, clock) -> None:

    finish(client, clock, "impl", waited=1, status="failed", usage={"cost_usd": 0.004})
    result = runner.invoke(args=["metrics", "show"])
    assert usage_lines(result.output) == [
        "Queue wait: p50 1 s, p95 1 s (creation to first claim, over 1 task)",
        "Tokens: input unknown, output unknown, cache read unknown, cache written unknown "
        "(1 task reported tokens or a cost)",
        "Cost: $0.004, per completed task unknown (no task completed)",
    ]


def test_without_usage_nothing_is_shown_as_zero(runner, seeded) -> None:
    result = runner.invoke(args=["metrics", "show", "--window-days", "30"])
    assert result.exit_code == 0, result.output
    assert usage_lines(result.output) == [
        "Queue wait: unknown (no record in the window carries it)",
        "Usage: unknown (no record in the window carries tokens or a cost)",
    ]
    assert "$" not in result.output and " cost " not in result.output


def test_usage_agrees_with_the_api(runner, client, logs_dir, clock) -> None:
    from app.charts import human_count, human_dollars

    seed_metrics(logs_dir, with_usage(spread_records(clock(), 200, days=40)))
    result = runner.invoke(args=["metrics", "show", "--window-days", "30"])
    api = client.get("/api/agent/metrics?window_days=30").json

    def cells(row: dict) -> list[str]:
        return ["-" if row[key] is None else human(row[key]) for key, human in (
            ("cost_usd", human_dollars), ("input_tokens", human_count),
            ("output_tokens", human_count))]

    for label, key in (("task type", "by_task_type"), ("model", "by_model")):
        assert usage_table(result.output, label) == {
            name: cells(row) for name, row in api[key].items()}
    usage = api["usage"]
    assert usage_lines(result.output)[2] == (
        f"Cost: {human_dollars(usage['cost_usd'])}, "
        f"{human_dollars(usage['cost_per_completed_task'])} per completed task")
