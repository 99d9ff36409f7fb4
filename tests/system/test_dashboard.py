"""GET /dashboard: the page's numbers agree with the API, and it renders in a real browser."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
from PIL import Image

from tests.support.seed import spread_records
from tests.support import GunicornServer
from tests.support.stores import seed_metrics

SCREEN = (1366, 900)
COMPLETED_FILL = (0x3F, 0x91, 0x42)
FAILED_FILL = (0xD6, 0x45, 0x45)


def tile(html: str, name: str) -> str:
    return re.search(rf'id="{name}">([^<]*)<', html).group(1)


def table(html: str, table_id: str) -> str:
    return re.search(rf'<table id="{table_id}">(.*?)</table>', html, re.S).group(1)


def table_cells(html: str, table_id: str) -> list[list[str]]:
    """The plain cells of each row of the table, in order (rows without any left out)."""
    rows = [re.findall(r"<td>([^<]*)</td>", row)
            for row in re.findall(r"<tr>(.*?)</tr>", table(html, table_id), re.S)]
    return [row for row in rows if row]


def table_rows(html: str, table_id: str) -> dict[str, list[str]]:
    return {row[0]: row[1:] for row in table_cells(html, table_id)}


def assert_agrees_with_api(html: str, aggregates: dict, series: list[dict]) -> None:
    totals, times = aggregates["success_rate"], aggregates["execution_time"]
    assert tile(html, "total") == str(totals["total"])
    assert tile(html, "failed") == str(totals["failed"])
    assert tile(html, "rate") == f"{totals['rate'] * 100:.0f}%"
    assert tile(html, "p50") == f"{times['p50_seconds']} s"
    assert tile(html, "p95") == f"{times['p95_seconds']} s"
    assert table_rows(html, "by-task-type") == {
        name: [str(row["count"]), str(row["completed"]), str(row["failed"]),
               f"{row['success_rate'] * 100:.0f}%"]
        for name, row in aggregates["by_task_type"].items()
    }
    assert table_rows(html, "by-model") == {
        name: [str(row["count"]), f"{row['avg_duration']} s"]
        for name, row in aggregates["by_model"].items()
    }
    finished = re.search(r'<svg id="chart-finished".*?</svg>', html, re.S).group(0)
    for status in ("completed", "failed"):
        bars = re.findall(rf'<rect class="{status}"[^>]*>', finished)
        assert len(bars) == sum(1 for point in series if point[status])
    busy = sum(1 for point in series if point["completed"] + point["failed"])
    for chart, css in (("success", "rate"), ("durations", "p50"), ("durations", "p95")):
        svg = re.search(rf'<svg id="chart-{chart}".*?</svg>', html, re.S).group(0)
        assert len(re.findall(rf'<circle class="dot-{css}"', svg)) == busy


@pytest.mark.parametrize("window_days,bucket", [(7, "day"), (1, "hour"), (30, "day")])
def test_page_agrees_with_the_api(client, logs_dir, clock, window_days, bucket) -> None:
    seed_metrics(logs_dir, spread_records(clock(), 300, days=40))
    response = client.get(f"/dashboard?window_days={window_days}&bucket={bucket}")
    assert response.status_code == 200 and response.mimetype == "text/html"
    html = response.data.decode()
    aggregates = client.get(f"/api/agent/metrics?window_days={window_days}").json
    series = client.get(f"/api/agent/metrics/timeseries?window_days={window_days}"
                        f"&bucket={bucket}").json["series"]
    assert aggregates["success_rate"]["total"] > 0
    assert_agrees_with_api(html, aggregates, series)
    assert f'<option value="{window_days}" selected>' in html
    assert f'<option value="{bucket}" selected>' in html
    assert "No records in this window" not in html


def test_empty_window_says_so(client, logs_dir, clock) -> None:
    seed_metrics(logs_dir, spread_records(clock(), 20, days=2), noise=False)
    clock.advance(days=10)
    task = client.post("/api/agent/tasks", json={"direction": "d", "task_type": "impl"}).json
    client.patch(f"/api/agent/tasks/{task['id']}", json={"status": "running"})
    html = client.get("/dashboard?window_days=1").data.decode()
    assert "No records in this window" in html
    assert tile(html, "total") == "0" and tile(html, "rate") == "0%"
    assert 'id="chart-finished"' not in html
    queue = re.search(r'<svg id="chart-queue".*?</svg>', html, re.S).group(0)
    assert re.search(r'<rect class="running"[^>]*><title>running: 1</title>', queue)


def test_bad_window_is_422(client) -> None:
    assert client.get("/dashboard?window_days=0").status_code == 422
    assert client.get("/dashboard?bucket=minute").status_code == 422


def chromium() -> str:
    path = shutil.which("chromium")
    if path:
        return path
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is not installed; .ci/run installs it with apt-get")
    pytest.skip("chromium is not installed (apt-get install chromium); CI installs it")


def run_chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", f"--window-size={SCREEN[0]},{SCREEN[1]}",
         *args],
        capture_output=True, text=True, timeout=300, check=True,
    )


def seed_through_the_api(base: str) -> None:
    """Finished tasks of every type, and a queue: pending, running, needs_decision."""
    outcomes = [("spec", "completed", 40), ("test", "completed", 95), ("impl", "failed", 600),
                ("impl", "completed", 1500), ("review", "completed", 12), ("heal", "failed", 8)]
    for task_type, status, duration in outcomes:
        task = requests.post(f"{base}/api/agent/tasks", timeout=30,
                             json={"direction": "d", "task_type": task_type}).json()
        requests.patch(f"{base}/api/agent/tasks/{task['id']}", timeout=30,
                       json={"status": status, "duration_seconds": duration}).raise_for_status()
    for status in ("pending", "running", "needs_decision"):
        task = requests.post(f"{base}/api/agent/tasks", timeout=30,
                             json={"direction": "d", "task_type": "impl"}).json()
        if status != "pending":
            requests.patch(f"{base}/api/agent/tasks/{task['id']}", timeout=30,
                           json={"status": status, "decision_prompt": "which way?"}
                           if status == "needs_decision" else {"status": status}
                           ).raise_for_status()
    task = requests.post(f"{base}/api/agent/tasks", timeout=30,
                         json={"direction": "d", "task_type": "review"}).json()
    claimed = requests.post(f"{base}/api/agent/tasks/claim", timeout=30,
                            json={"runner_id": "host-7", "task_types": ["review"]}).json()
    assert claimed["id"] == task["id"]
    requests.patch(f"{base}/api/agent/tasks/{task['id']}", timeout=30, json={
        "runner_id": "host-7", "progress_pct": 60, "current_step": "reading the diff",
        "log_append": "checked out\nreading the diff\n"}).raise_for_status()


def post(base: str, path: str, **body) -> dict:
    response = requests.post(f"{base}/api/agent/{path}", json=body, timeout=30)
    response.raise_for_status()
    return response.json()


def claimed(base: str, runner_id: str, task_type: str, **body) -> str:
    """The id of a new task of ``task_type`` that ``runner_id`` claims."""
    task = post(base, "tasks", direction="d", task_type=task_type, **body)
    assert post(base, "tasks/claim", runner_id=runner_id, task_types=[task_type])["id"] \
        == task["id"]
    return task["id"]


def seed_the_queue(base: str) -> dict[str, str]:
    """Besides what :func:`seed_through_the_api` leaves: a waiting task of a higher
    priority, a scheduled one, a running one asked to stop, one failed after its last
    attempt, and a cancelled one; their ids by what they are."""
    later = (datetime.now(timezone.utc) + timedelta(hours=2)).isoformat()
    ids = {
        "urgent": post(base, "tasks", direction="d", task_type="spec", priority=10)["id"],
        "scheduled": post(base, "tasks", direction="d", task_type="test", priority=5,
                          run_after=later)["id"],
        "stopping": claimed(base, "host-9", "heal"),
        "failed": claimed(base, "host-8", "heal", max_attempts=1),
        "cancelled": post(base, "tasks", direction="d", task_type="spec")["id"],
    }
    post(base, f"tasks/{ids['stopping']}/cancel", reason="wrong branch")
    post(base, f"tasks/{ids['cancelled']}/cancel")
    requests.patch(f"{base}/api/agent/tasks/{ids['failed']}", timeout=30, json={
        "runner_id": "host-8", "status": "failed", "output": "rate limited",
        "retryable": True}).raise_for_status()
    return ids


def assert_shows_the_queue(dom: str, ids: dict[str, str]) -> None:
    """The parts of the queue, each task with its priority, and times without their
    seconds' fractions."""
    waiting = table_cells(dom, "waiting")
    assert [row[:3] for row in waiting] == [[ids["urgent"], "spec", "10"],
                                            [waiting[1][0], "impl", "0"]]
    [[scheduled, task_type, priority, attempts, runs_after, starts_in]] = table_cells(
        dom, "scheduled")
    assert (scheduled, task_type, priority, attempts) == (ids["scheduled"], "test", "5",
                                                          "0 of 3")
    assert re.fullmatch(r"[A-Z][a-z]{2} \d\d \d\d:\d\d", runs_after) and starts_in == "2h"
    running = table(dom, "running")
    stopping = next(row for row in re.findall(r"<tr>(.*?)</tr>", running, re.S)
                    if ids["stopping"] in row)
    assert "cancel requested" in stopping and "wrong branch" in stopping
    assert running.count("cancel requested") == 1
    needing = table_rows(dom, "attention")
    assert needing[ids["failed"]][:4] == ["failed", "heal", "0", "1 of 1"]
    assert "rate limited" in table(dom, "attention")
    assert [row[0] for row in needing.values()].count("needs a decision") == 1
    assert ids["cancelled"] not in dom
    queue = re.search(r'<svg id="chart-queue".*?</svg>', dom, re.S).group(0)
    for part, count in (("waiting", 2), ("scheduled", 1), ("running", 3),
                        ("needs_decision", 1)):
        assert re.search(rf'<rect class="{part}"[^>]*><title>{part}: {count}</title>', queue)
    assert tile(dom, "cancelled") == "1"
    assert not re.search(r"\d\d:\d\d:\d\d\.\d{6}", table(dom, "running")
                         + table(dom, "scheduled") + table(dom, "attention"))


def test_dashboard_in_headless_chromium(logs_dir, tmp_path) -> None:
    binary = chromium()
    history = spread_records(datetime.now(timezone.utc), 150, days=6.5)
    seed_metrics(logs_dir, history)
    server = GunicornServer(logs_dir).start()
    try:
        seed_through_the_api(server.base_url)
        ids = seed_the_queue(server.base_url)
        url = f"{server.base_url}/dashboard?window_days=7&bucket=day"
        aggregates = requests.get(f"{server.base_url}/api/agent/metrics?window_days=7",
                                  timeout=30).json()
        series = requests.get(f"{server.base_url}/api/agent/metrics/timeseries"
                              "?window_days=7&bucket=day", timeout=30).json()["series"]
        dom = run_chromium(binary, tmp_path / "profile-dom", "--dump-dom", url).stdout
        screenshot = tmp_path / "dashboard.png"
        run_chromium(binary, tmp_path / "profile-shot", f"--screenshot={screenshot}", url)
    finally:
        server.stop()
    assert aggregates["success_rate"]["total"] == len(history) + 7
    assert_agrees_with_api(dom, aggregates, series)
    running = table(dom, "running")
    assert "host-7" in running and "60%" in running and "reading the diff" in running
    assert "by hand" in running and "checked out" in running
    assert_shows_the_queue(dom, ids)

    image = Image.open(screenshot).convert("RGB")
    assert image.size == SCREEN
    colors = image.getcolors(maxcolors=1 << 20)
    assert len(colors) > 50, "the screenshot looks blank"
    counts = {color: count for count, color in colors}
    assert counts.get(COMPLETED_FILL, 0) > 500, "no completed bars on screen"
    assert counts.get(FAILED_FILL, 0) > 50, "no failed bars on screen"
    keep = os.environ.get("DASHBOARD_SCREENSHOT")
    if keep:
        shutil.copy(screenshot, keep)
