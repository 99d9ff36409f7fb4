"""The runner against stand-in services: down, refusing, losing answers, taking leases."""
from __future__ import annotations

import re
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from bench.servers import runner_env
from tests.runner.stand_in import BrokenReports, StandIn, sent, serving, task
from tests.support.runner import (
    outbox, run_runner, start_runner, task_log, wait_for,
)
from tests.support import free_port

TOKEN = "s3cret-runner-token"


@pytest.fixture
def logs_dir(tmp_path: Path) -> Path:
    """The runner's folder lives here; the stand-in API keeps no store, so these tests
    run once, not once per backend."""
    return tmp_path


def test_api_down_is_one_line_and_a_failure(logs_dir: Path):
    base_url = f"http://127.0.0.1:{free_port()}"
    status, stderr = run_runner(runner_env(base_url, logs_dir), "--once", timeout=30)
    assert status == 1
    assert stderr.splitlines() == [
        f"agent_runner ERROR: cannot reach the API at {base_url}: Connection refused"
    ]


def test_undelivered_reports_wait_in_the_outbox_and_are_replayed_at_start(logs_dir: Path):
    with serving(BrokenReports, task(1), task(2)) as base_url:
        env = runner_env(base_url, logs_dir, AGENT_API_TOKEN=TOKEN)
        status, stderr = run_runner(env, "--once", "--report-wait", "2")
    assert status == 1, stderr
    assert "2 report(s) not delivered; kept in " in stderr
    assert "Traceback" not in stderr
    waiting = {saved["task_id"]: saved["body"] for saved in outbox(env)}
    assert set(waiting) == {task(1)["id"], task(2)["id"]}
    claims = sent(BrokenReports, "POST")
    # A runner_id whose report did not get through is not used again: the service would
    # hand the same task back to it.
    assert len({claim["runner_id"] for claim in claims}) == len(claims) == 3
    for number, claim in zip((1, 2), claims):
        body = waiting[task(number)["id"]]
        assert body["runner_id"] == claim["runner_id"]
        assert (body["status"], body["output"]) == ("completed", "hello from the task\n")
        assert body["log_append"] == "hello from the task\n"
        assert 0 < body["duration_seconds"] < 5
    assert {r["authorization"] for r in BrokenReports.requests} == {f"Bearer {TOKEN}"}

    running = [{**task(n), "status": "running", "runner_id": claims[n - 1]["runner_id"]}
               for n in (1, 2)]
    with serving(StandIn, *running) as base_url:
        status, stderr = run_runner({**env, "AGENT_API_BASE": base_url}, "--once")
    assert status == 0, stderr
    assert [(r["method"], r["path"].rsplit("/", 1)[1]) for r in StandIn.requests] == [
        ("GET", "whoami"), ("GET", "tasks"), ("PATCH", task(1)["id"]), ("PATCH", task(2)["id"]),
        ("POST", "claim")]
    assert sent(StandIn, "PATCH") == [waiting[task(1)["id"]], waiting[task(2)["id"]]]
    assert {each["status"] for each in StandIn.tasks.values()} == {"completed"}
    assert outbox(env) == []


class TakenOver(StandIn):
    """Another runner took the task over while ours ran it."""

    def patch(self, task: dict[str, Any], body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        task["runner_id"] = "someone-else"
        return super().patch(task, body)


def test_a_report_that_can_never_be_applied_is_dropped_naming_the_task(logs_dir: Path):
    with serving(TakenOver, task(1)) as base_url:
        env = runner_env(base_url, logs_dir)
        status, stderr = run_runner(env, "--once")
    assert status == 1
    [line] = [line for line in stderr.splitlines() if "ERROR" in line]
    assert (f"task {task(1)['id']}: report of status completed can never be applied "
            '(the API refused it with 409, "held by another runner"; the task is running now, '
            "held by runner someone-else); dropped") in line
    assert outbox(env) == []
    assert [r["method"] for r in TakenOver.requests] == [
        "GET", "GET", "POST", "PATCH", "GET", "POST"]


class LostAnswers(StandIn):
    """Behind a proxy that loses the first answer to each claim and each report, after
    the service applied them (503, 504); a report sent again meets 409."""

    answered: set[str] = set()

    def claim(self, runner_id: str) -> tuple[int, dict[str, Any] | None]:
        status, body = super().claim(runner_id)
        return self._lose_once(f"claim {runner_id}", status, body, 503)

    def patch(self, task: dict[str, Any], body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if task["status"] == body.get("status"):
            return 409, {"detail": f"the task is {task['status']} already"}
        status, answer = super().patch(task, body)
        return self._lose_once(f"report {task['id']}", status, answer, 504)

    def _lose_once(self, what: str, status: int, body: Any, lost: int) -> tuple[int, Any]:
        if status != 200 or what in self.answered:
            return status, body
        self.answered.add(what)
        return lost, {"detail": "the proxy lost the answer"}


def test_answers_lost_after_being_applied_are_settled(logs_dir: Path, tmp_path: Path):
    runs = tmp_path / "runs"
    LostAnswers.answered = set()
    with serving(LostAnswers, task(1, f"sh -c 'echo ran >> {runs}; echo done'")) as base_url:
        env = runner_env(base_url, logs_dir)
        status, stderr = run_runner(env, "--once")
    assert status == 0, stderr
    assert "ERROR" not in stderr and "WARNING" not in stderr
    assert runs.read_text() == "ran\n"
    assert LostAnswers.tasks[task(1)["id"]]["status"] == "completed"
    claims = sent(LostAnswers, "POST")
    assert len(claims) == 3 and claims[0] == claims[1]  # the claim sent again, then 204
    assert [body["status"] for body in sent(LostAnswers, "PATCH", "report")] == [
        "completed"] * 2
    assert outbox(env) == []


class LeaseTakenOver(StandIn):
    """A heartbeat learns that another runner holds the task now."""

    def patch(self, task: dict[str, Any], body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        task["runner_id"] = "someone-else"
        return 409, {"detail": "held by another runner"}


def test_a_lost_lease_stops_the_command_and_reports_nothing(logs_dir: Path):
    with serving(LeaseTakenOver, task(1, "sh -c 'echo started; exec sleep 60'")) as base_url:
        env = runner_env(base_url, logs_dir)
        started = time.monotonic()
        status, stderr = run_runner(env, "--once", "--lease-seconds", "5")
    assert status == 0, stderr
    assert time.monotonic() - started < 20
    assert f"task {task(1)['id']}: another runner holds the task now" in stderr
    [heartbeat] = sent(LeaseTakenOver, "PATCH")
    assert "status" not in heartbeat and heartbeat["log_append"] == "started\n"
    assert task_log(env, task(1)["id"]).read_text() == (
        "started\n[stopped: another runner holds the task now]\n")
    assert outbox(env) == []


def test_each_worker_claims_only_when_free_under_its_own_id(logs_dir: Path):
    tasks = [task(n, "sh -c 'sleep 0.2; echo token=${AGENT_API_TOKEN:-hidden}'")
             for n in range(1, 5)]
    with serving(StandIn, *tasks) as base_url:
        env = runner_env(base_url, logs_dir, AGENT_API_TOKEN=TOKEN)
        status, stderr = run_runner(env, "--once", "--workers", "2")
    assert status == 0, stderr
    assert {each["output"] for each in StandIn.tasks.values()} == {"token=hidden\n"}
    by_runner: dict[str, list[str]] = {}
    for request in StandIn.requests[2:]:  # after GET /api/whoami and the task list
        by_runner.setdefault(request["body"]["runner_id"], []).append(request["method"])
    assert len(by_runner) == 2
    for runner_id, methods in by_runner.items():
        assert re.fullmatch(rf"{re.escape(socket.gethostname())}-\d+-[0-9a-f]{{6}}-w[12]",
                            runner_id)
        assert methods == ["POST", "PATCH"] * (len(methods) // 2) + ["POST"]


class RecoveringReports(BrokenReports):
    """Reports are answered 500 until ``broken_until`` (a time.monotonic() value)."""

    broken_until = 0.0

    def patch(self, task: dict[str, Any], body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if time.monotonic() < self.broken_until:
            return super().patch(task, body)
        return StandIn.patch(self, task, body)


def test_a_polling_runner_keeps_sending_what_waits_in_its_outbox(logs_dir: Path):
    RecoveringReports.broken_until = time.monotonic() + 2.5
    with serving(RecoveringReports, task(1)) as base_url:
        env = runner_env(base_url, logs_dir)
        runner = start_runner(env, "--interval", "0.2")
        try:
            wait_for(lambda: RecoveringReports.tasks[task(1)["id"]]["status"] == "completed",
                     "the report to get through", timeout=30)
            wait_for(lambda: outbox(env) == [], "the outbox to empty", timeout=10)
        finally:
            runner.terminate()
            _, stderr = runner.communicate(timeout=60)
    assert runner.returncode == 143, stderr
    reports = sent(RecoveringReports, "PATCH", "report")
    assert len(reports) >= 3 and all(each == reports[0] for each in reports)
    assert "not delivered yet" in stderr
