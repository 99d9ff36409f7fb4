"""What the runner takes from the service, checked: task ids that name files, programs it
may run, who holds a task it reported, and which runner ids the token may use."""
from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from app.runner.settings import runner_from_env
from app.services.routing import BUILTIN_ROUTES
from app.shared_settings import CLAUDE_PROGRAM
from bench.servers import runner_env
from tests.runner.stand_in import StandIn, sent, serving, task
from tests.support.runner import outbox, run_runner


def own_env(base_url: str, folder: Path, **extra: str) -> dict[str, str]:
    """A runner's environment, with a runner folder of the test's own."""
    return runner_env(base_url, folder, AGENT_RUNNER_DIR=str(folder / "runner"), **extra)


REFUSED = ("[refused: sh is not a program this runner may run (--allow-program, "
           "AGENT_ALLOW_PROGRAMS)]\n")


def test_a_task_whose_id_is_not_a_file_name_is_left_alone(tmp_path: Path):
    """An id that would have its report written outside the runner's folder (as
    ``/../../tmp/x`` would write ``/tmp/x.json``) is never used."""
    ran = tmp_path / "ran"
    escaped = tmp_path / "escaped"
    bad = {**task(1, f"sh -c 'touch {ran}'"), "id": "/.." * 40 + str(escaped)}
    with serving(StandIn, bad, task(2)) as base_url:
        env = own_env(base_url, tmp_path)
        status, stderr = run_runner(env, "--once", "--report-wait", "1")
    assert status == 1, stderr
    [line] = [line for line in stderr.splitlines() if "ERROR" in line]
    assert line == ("agent_runner ERROR: claimed a task that cannot be run here (not a task "
                    f"id: {bad['id'][:40]!r}); left alone")
    assert not ran.exists() and list(tmp_path.glob("escaped*")) == []
    assert StandIn.tasks[bad["id"]]["status"] == "running"
    assert StandIn.tasks[task(2)["id"]]["status"] == "completed"
    assert sent(StandIn, "PATCH", "report") == [
        body for body in sent(StandIn, "PATCH") if body["status"] == "completed"]
    assert outbox(env) == []


@pytest.mark.parametrize("setting,options,expected", [
    (None, (), "failed"),  # the built-in routing's program only
    ("claude, python3", (), "failed"),
    ("claude, python3", ("--allow-program", "python3", "--allow-program", "sh"), "completed"),
    ("claude,sh", (), "completed"),
])
def test_only_the_allowed_programs_run(tmp_path: Path, setting: str | None,
                                       options: tuple[str, ...], expected: str):
    ran = tmp_path / "ran"
    with serving(StandIn, task(1, f"sh -c 'touch {ran}; echo ran'")) as base_url:
        env = own_env(base_url, tmp_path, AGENT_ALLOW_PROGRAMS=setting or "")
        status, stderr = run_runner(env, "--once", *options)
    assert status == 0, stderr
    [report] = sent(StandIn, "PATCH", "report")
    assert report["status"] == expected and "retryable" not in report
    assert report["output"] == (REFUSED if expected == "failed" else "ran\n")
    assert ran.exists() == (expected == "completed")


@pytest.mark.parametrize("setting,expected", [
    ("", {CLAUDE_PROGRAM}),
    ("claude", {"claude"}),
    (" claude, /usr/bin/python3\tsh,,", {"claude", "/usr/bin/python3", "sh"}),
])
def test_allowed_programs_setting(tmp_path: Path, setting: str, expected: set[str]):
    settings = runner_from_env({"AGENT_ALLOW_PROGRAMS": setting, "AGENT_WORKDIR": str(tmp_path)})
    assert settings.allowed_programs == expected


def test_the_default_is_the_program_of_the_built_in_routing():
    assert {route.command[0] for route in BUILTIN_ROUTES.values()} == {CLAUDE_PROGRAM}


class RefusedReports(StandIn):
    """The task was cancelled while it ran: its report is refused (409), and the task
    still names the runner that reported it as the last to hold it."""

    def patch(self, task: dict[str, Any], body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if "status" in body:
            task["status"] = "cancelled"
            return 409, {"detail": "the task is cancelled"}
        return super().patch(task, body)


def test_a_refused_report_names_no_holder_unless_another_runner_holds_the_task(
        tmp_path: Path):
    with serving(RefusedReports, task(1)) as base_url:
        status, stderr = run_runner(own_env(base_url, tmp_path), "--once")
    assert status == 1, stderr
    [line] = [line for line in stderr.splitlines() if "ERROR" in line]
    assert line == (f"agent_runner ERROR: task {task(1)['id']}: report of status completed "
                    'can never be applied (the API refused it with 409, "the task is '
                    'cancelled"; the task is cancelled now); dropped')


class WhoAmI(StandIn):
    """A service that says who the token is: ``GET /api/whoami``."""

    status = 200
    caller: dict[str, Any] = {}

    def do_GET(self) -> None:
        if urlsplit(self.path).path != "/api/whoami":
            return super().do_GET()
        self._note()
        self._answer(self.status, self.caller if self.status == 200 else {"detail": "down"})


RUNNER_ID = rf"{re.escape(socket.gethostname())}-\d+-[0-9a-f]{{6}}-w1"


@pytest.mark.parametrize("status,caller,prefix,line", [
    (200, {"name": "ci", "role": "run"}, "ci/", None),
    (200, {"name": "ops", "role": "admin"}, "", None),
    (200, {"name": None, "role": "admin"}, "", None),
    (404, {}, "", "agent_runner INFO: the API does not say who the token is (no "
                  "/api/whoami); runner ids go unprefixed"),
    (500, {}, "", "agent_runner WARNING: asking who the token is: the API answered 500: "
                  "down; runner ids go unprefixed"),
])
def test_runner_ids_start_as_the_token_asks(tmp_path: Path, status: int, caller: dict,
                                            prefix: str, line: str | None):
    WhoAmI.status, WhoAmI.caller = status, caller
    with serving(WhoAmI, task(1), task(2)) as base_url:
        code, stderr = run_runner(own_env(base_url, tmp_path), "--once")
    assert code == 0, stderr
    claims = sent(WhoAmI, "POST")
    assert len(claims) == 3
    assert all(re.fullmatch(re.escape(prefix) + RUNNER_ID, claim["runner_id"])
               for claim in claims), claims
    assert {each["status"] for each in WhoAmI.tasks.values()} == {"completed"}
    lines = [each for each in stderr.splitlines() if "who the token is" in each]
    assert lines == ([line] if line else [])
    # A 200 shows the API up and the token taken: a run token may not list the tasks.
    listed = any(r["path"] == "/api/agent/tasks" for r in WhoAmI.requests)
    assert listed == (status != 200)


@pytest.mark.parametrize("role", ["read", "submit"])
def test_a_token_that_may_not_claim_stops_the_runner_at_start(tmp_path: Path, role: str):
    WhoAmI.status, WhoAmI.caller = 200, {"name": "scraper", "role": role}
    with serving(WhoAmI, task(1)) as base_url:
        code, stderr = run_runner(own_env(base_url, tmp_path), "--once")
    assert code == 1, stderr
    assert f"the token 'scraper' has role {role}, which may not claim tasks" in stderr
    assert sent(WhoAmI, "POST") == []
