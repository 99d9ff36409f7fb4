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
