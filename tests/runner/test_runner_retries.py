"""Retries and cancellation, on the runner's side: what makes a failure worth retrying
(exit status 75, ``::retry-after::``, a timeout), the report that says so, and a request
to cancel seen in a heartbeat's answer, which stops the command's whole group."""
from __future__ import annotations

import os
import shlex
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.runner.api import TaskApi
from app.api_limits import MAX_DELAY_SECONDS
from app.runner.conventions import Progress, RetryAfter, parse_line
from app.runner.execution import Cause, Ended
from app.runner.heartbeat import Heartbeat, interval
from app.runner.outcome import judge
from app.runner.output import MAX_LINE_BYTES, TaskOutput
from bench.servers import runner_env
from tests.runner.stand_in import BrokenReports, StandIn, sent, serving, task
from tests.support.runner import (
    STUBBORN, group_members, outbox, process_alive, run_runner,
)

SLACK_SECONDS = 3.0
"""Room for a runner process to start, and for a heartbeat or a report on its way."""


@pytest.mark.parametrize("line,expected", [
    ("::retry-after:: 2\n", RetryAfter(2.0)),
    ("::retry-after:: 0.5 \r\n", RetryAfter(0.5)),
    ("::retry-after:: 0", RetryAfter(0.0)),
    (f"::retry-after:: {MAX_DELAY_SECONDS:g}", RetryAfter(MAX_DELAY_SECONDS)),
    (f"::retry-after:: {MAX_DELAY_SECONDS * 10:g}", None),
    ("::retry-after:: -1", None),
    ("::retry-after:: soon", None),
    ("::retry-after:: inf", None),
    ("::retry-after:: nan", None),
    ("::retry-after:: 2 minutes", None),
    ("::retry-after::2", None),
    ("::retry-after::", None),
    (" ::retry-after:: 2", None),
    ("::progress:: 40 compiling", Progress(40.0, "compiling")),
    ("::needs-decision:: ship it?", None),
])
def test_retry_after_lines(line: str, expected: RetryAfter | None):
    assert parse_line(line) == expected


def test_the_last_retry_after_line_counts_and_a_malformed_one_is_ignored():
    output = TaskOutput()
    assert output.retry_after is None
    output.write(b"::retry-after:: 30\nwork\n::retry-after:: 2")
    assert output.retry_after == 30  # a line counts once it is whole
    output.write(b"\n::retry-after:: later\n::progress:: 50 half\n")
    assert output.retry_after == 2
    output.write(b"::retry-after:: " + b"9" * MAX_LINE_BYTES + b"\n")
    assert output.retry_after == 2
    assert output.update()[0]["progress_pct"] == 50


def ended(exit_code: int | None, note: str | None = None, cause: Cause | None = None) -> Ended:
    return Ended(exit_code, note, cause)


@pytest.mark.parametrize("run,retry_after,expected", [
    (ended(0), None, {"status": "completed"}),
    (ended(0), 5.0, {"status": "completed"}),
    (ended(1, "exit status 1"), None, {"status": "failed"}),
    (ended(75, "exit status 75"), None, {"status": "failed", "retryable": True}),
    (ended(1, "exit status 1"), 2.0,
     {"status": "failed", "retryable": True, "retry_after_seconds": 2.0}),
    (ended(75, "exit status 75"), 0.0,
     {"status": "failed", "retryable": True, "retry_after_seconds": 0.0}),
    (ended(None, "timeout after 1 s", Cause.TIMEOUT), None,
     {"status": "failed", "retryable": True}),
    (ended(None, "cancelled on request", Cause.CANCELLED), 2.0, {"status": "cancelled"}),
    (ended(None, "interrupted: the runner was stopped", Cause.INTERRUPTED), None,
     {"status": "failed"}),
    (ended(None, "cannot start x: No such file or directory"), None, {"status": "failed"}),
])
def test_the_report_says_whether_a_failure_is_worth_retrying(
    run: Ended, retry_after: float | None, expected: dict[str, Any]
):
    outcome = judge(run, 1.5, prompt=None, failed=run.note is not None,
                    retry_after=retry_after, usage={})
    assert outcome.report("r-1", "the output\n", "", executor="box") == {
        "runner_id": "r-1", "executor": "box", "output": "the output\n",
        "duration_seconds": 1.5, **expected}


def test_a_decision_asked_for_is_no_failure_whatever_the_exit_status():
    outcome = judge(ended(75), 0.5, prompt="ship it?", failed=False, retry_after=3.0,
                    usage={"input_tokens": 5})
    assert outcome.report("r-1", "out", "more", executor="box") == {
        "runner_id": "r-1", "status": "needs_decision", "output": "out", "log_append": "more",
        "duration_seconds": 0.5, "decision_prompt": "ship it?"}


@pytest.mark.parametrize("lease_seconds,expected", [(5, 5 / 3), (30, 10), (300, 10),
                                                    (3600, 10)])
def test_heartbeats_go_every_third_of_the_lease_and_at_most_10_s_apart(
    lease_seconds: int, expected: float
):
    assert interval(lease_seconds) == pytest.approx(expected)


class Answers(TaskApi):
    """Heartbeats answered from a list, the last answer again once it runs out."""

    def __init__(self, *answers: dict[str, Any] | None) -> None:
        self.answers = list(answers)
        self.bodies: list[dict[str, Any]] = []

    def heartbeat(self, task_id: str, body: dict[str, Any]) -> dict[str, Any] | None:
        self.bodies.append(body)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


@pytest.mark.parametrize("answers,cancelled,lost", [
    (({"cancel_requested": False}, {"cancel_requested": True}), True, False),
    (({"cancel_requested": False},), False, False),
    (({}, None), False, True),
])
def test_a_heartbeat_answer_may_ask_to_cancel(
    answers: tuple[dict[str, Any] | None, ...], cancelled: bool, lost: bool
):
    api = Answers(*answers)
    cancel, lost_lease = threading.Event(), threading.Event()
    with Heartbeat(api, "t" * 32, "r-1", lease_seconds=0.06, output=TaskOutput(),
                   lost=lost_lease, cancel=cancel):
        time.sleep(0.3)
    assert (cancel.is_set(), lost_lease.is_set()) == (cancelled, lost)
    # Heartbeats go on while a cancelled command stops; a lost lease ends them.
    assert len(api.bodies) == 2 if lost else len(api.bodies) > 3


def sh(script: str, *args: str) -> str:
    """A task's command: ``script`` run by ``sh`` with ``args``."""
    return shlex.join(["sh", "-c", script, "--", *args])


def reports_by_task(handler: type[StandIn]) -> dict[str, dict[str, Any]]:
    bodies = {r["path"].rsplit("/", 1)[1]: r["body"] for r in handler.requests
              if r["method"] == "PATCH" and "status" in r["body"]}
    return {task_id: {name: body[name] for name in body
                      if name in ("status", "retryable", "retry_after_seconds")}
            for task_id, body in bodies.items()}


def test_failures_worth_retrying_are_reported_retryable(tmp_path: Path):
    cases = [
        (sh("echo busy; exit 75"), {"status": "failed", "retryable": True}),
        (sh("echo '::retry-after:: 2'; exit 1"),
         {"status": "failed", "retryable": True, "retry_after_seconds": 2}),
        (sh("echo '::retry-after:: 30'; echo '::retry-after:: 2'; echo '::retry-after:: x';"
            " exit 75"),
         {"status": "failed", "retryable": True, "retry_after_seconds": 2}),
        (sh("echo '::retry-after:: soon'; exit 1"), {"status": "failed"}),
        (sh("echo '::retry-after:: 2'"), {"status": "completed"}),
        (sh("exit 3"), {"status": "failed"}),
    ]
    tasks = [task(number, command) for number, (command, _) in enumerate(cases, 1)]
    with serving(StandIn, *tasks) as base_url:
        status, stderr = run_runner(runner_env(base_url, tmp_path), "--once", timeout=60)
    assert status == 0, stderr
    assert reports_by_task(StandIn) == {
        each["id"]: expected for each, (_, expected) in zip(tasks, cases)}


def test_a_timed_out_command_is_reported_retryable(tmp_path: Path):
    with serving(StandIn, task(1, sh("echo started; exec sleep 300"))) as base_url:
        status, stderr = run_runner(runner_env(base_url, tmp_path), "--once", "--timeout", "1",
                                    timeout=60)
    assert status == 0, stderr
    [report] = sent(StandIn, "PATCH", "report")
    assert (report["status"], report["retryable"]) == ("failed", True)
    assert "retry_after_seconds" not in report
    assert report["output"] == "started\n[timeout after 1 s]\n"


class Cancelling(StandIn):
    """Someone asked to cancel each task once it runs: heartbeats are answered with
    ``cancel_requested``. A report of ``cancelled`` is answered ``409`` when
    ``refused_as`` is set, the task then reading as that status (the service ended it)."""

    refused_as: str | None = None

    def patch(self, task: dict[str, Any], body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if "status" not in body:
            task["cancel_requested"] = True
        elif body["status"] == "cancelled" and self.refused_as is not None:
            task["status"] = self.refused_as
            return 409, {"detail": f"the task is {self.refused_as} already"}
        return super().patch(task, body)


@pytest.fixture
def pids(tmp_path: Path) -> Iterator[Path]:
    """Where a command writes the pids it wants checked; none outlives the test."""
    path = tmp_path / "pids"
    yield path
    for pid in path.read_text().split() if path.exists() else []:
        if process_alive(int(pid)):
            os.kill(int(pid), 9)


def heartbeat_times(handler: type[StandIn]) -> list[float]:
    return [r["at"] for r in handler.requests
            if r["method"] == "PATCH" and "status" not in r["body"]]


def report_time(handler: type[StandIn]) -> float:
    [at] = [r["at"] for r in handler.requests
            if r["method"] == "PATCH" and "status" in r["body"]]
    return at


def test_a_cancel_request_stops_the_whole_group_after_its_grace(tmp_path: Path, pids: Path):
    """A group that ignores SIGTERM gets SIGKILL after AGENT_CANCEL_GRACE_SECONDS; with
    the default lease (300 s) the request is seen within 10 s all the same."""
    grace = 1.0
    script = ('trap "" TERM; sleep 300 & echo $$ $! > "$1.tmp" && mv "$1.tmp" "$1";'
              ' echo started; wait')
    Cancelling.refused_as = None
    with serving(Cancelling, task(1, sh(script, str(pids)))) as base_url:
        env = runner_env(base_url, tmp_path, AGENT_CANCEL_GRACE_SECONDS=f"{grace:g}")
        started = time.monotonic()
        status, stderr = run_runner(env, "--once", timeout=60)
    assert status == 0, stderr
    leader, child = (int(pid) for pid in pids.read_text().split())
    assert not process_alive(leader) and not process_alive(child)
    assert group_members(leader) == []
    asked = heartbeat_times(Cancelling)[0]
    assert asked - started < 10 + SLACK_SECONDS
    assert grace <= report_time(Cancelling) - asked < grace + SLACK_SECONDS
    [report] = sent(Cancelling, "PATCH", "report")
    assert report["status"] == "cancelled" and "retryable" not in report
    assert report["output"] == "started\n[cancelled on request]\n"
    assert f"task {task(1)['id']}: cancel requested" in stderr


def test_a_cancelled_command_that_obeys_sigterm_stops_at_once(tmp_path: Path, pids: Path):
    """The leader exits on SIGTERM: its group is killed then, without waiting out the
    grace; its child, which ignores SIGTERM, goes with it."""
    command = shlex.join([part.replace("{direction}", str(pids)) for part in STUBBORN])
    with serving(Cancelling, task(1, command)) as base_url:
        env = runner_env(base_url, tmp_path, AGENT_CANCEL_GRACE_SECONDS="60")
        status, stderr = run_runner(env, "--once", "--lease-seconds", "6", timeout=60)
    assert status == 0, stderr
    child = int(pids.read_text())
    assert not process_alive(child)
    assert report_time(Cancelling) - heartbeat_times(Cancelling)[0] < SLACK_SECONDS
    [report] = sent(Cancelling, "PATCH", "report")
    assert report["status"] == "cancelled"
    assert report["output"] == f"child {child} started\n[cancelled on request]\n"


@pytest.mark.parametrize("refused_as,exit_status", [("cancelled", 0), ("failed", 1)])
def test_a_cancelled_report_met_with_409_is_settled_not_retried(
    tmp_path: Path, refused_as: str, exit_status: int
):
    """The service may have ended the task already (its lease ran out after the request
    to cancel): the report counts as delivered if the task is cancelled, else it is
    dropped with an error; either way it leaves the outbox."""
    Cancelling.refused_as = refused_as
    try:
        with serving(Cancelling, task(1, sh("exec sleep 300"))) as base_url:
            env = runner_env(base_url, tmp_path)
            status, stderr = run_runner(env, "--once", "--lease-seconds", "6", timeout=60)
    finally:
        Cancelling.refused_as = None
    assert status == exit_status, stderr
    assert [body["status"] for body in sent(Cancelling, "PATCH", "report")] == ["cancelled"]
    assert outbox(env) == []
    assert ("report of status cancelled can never be applied" in stderr) == bool(exit_status)


class CancellingBrokenReports(BrokenReports, Cancelling):
    """Heartbeats ask to cancel; reports are answered 500."""


def test_retryable_and_cancelled_reports_wait_in_the_outbox_whole(tmp_path: Path):
    tasks = [task(1, sh("echo '::retry-after:: 2'; exit 75")), task(2, sh("exec sleep 300"))]
    with serving(CancellingBrokenReports, *tasks) as base_url:
        env = runner_env(base_url, tmp_path)
        status, stderr = run_runner(env, "--once", "--workers", "2", "--lease-seconds", "6",
                                    "--report-wait", "1", timeout=60)
    assert status == 1, stderr
    waiting = {saved["task_id"]: saved["body"] for saved in outbox(env)}
    assert {task_id: {name: body.get(name) for name in
                      ("status", "retryable", "retry_after_seconds")}
            for task_id, body in waiting.items()} == {
        tasks[0]["id"]: {"status": "failed", "retryable": True, "retry_after_seconds": 2},
        tasks[1]["id"]: {"status": "cancelled", "retryable": None, "retry_after_seconds": None},
    }

    running = [{**each, "status": "running", "runner_id": waiting[each["id"]]["runner_id"]}
               for each in tasks]
    with serving(StandIn, *running) as base_url:
        status, stderr = run_runner({**env, "AGENT_API_BASE": base_url}, "--once", timeout=60)
    assert status == 0, stderr
    assert sorted(sent(StandIn, "PATCH"), key=lambda body: body["status"]) == [
        waiting[tasks[1]["id"]], waiting[tasks[0]["id"]]]
    assert outbox(env) == []
