"""The README's examples work as written: its walk from ``make run`` to a task's metrics is
run, line by line, with bash, against a real gunicorn.

What is taken from README.md: every ```sh block that holds a ``curl`` command or a runner
command (``.venv/bin/python scripts/agent_runner.py ...``) is part of the walk, and every
line of such a block must be one of: a comment, a ``curl`` command (with its ``\\``
continuation lines and whatever it is piped into), a runner command, or a variable
assignment (``NAME=value``, ``export NAME=value``). Anything else fails the test, so the
walk stays something a test can run. The walk's blocks run in order in one bash session,
so a variable set by one (``TASK_ID``) is there for the next.

What is substituted, and nothing else:

- ``make run``: the test starts ``gunicorn wsgi:app`` itself (``bench.servers``) on a free
  port, with the variables that the README's last ``make run`` line before the walk sets
  (``AGENT_ROUTING_FILE=... make run``), and its stores in a temporary folder;
- ``http://127.0.0.1:8000`` becomes that server's address, in every line;
- the runner gets ``AGENT_API_BASE`` (that server) and ``AGENT_RUNNER_DIR`` (a temporary
  folder) in its environment, and ``.venv/bin/python`` is the interpreter running the
  tests when the project has no ``.venv``;
- if the walk mentions ``AGENT_API_TOKEN``, the server and the shell get a fresh token.

``curl`` is a shell function that runs the real curl and writes its exit status and HTTP
status to a log: each command must exit 0 with a 2xx answer, and the function fails the
script at the first one that does not.
"""
from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from bench.servers import ROOT, GunicornServer, runner_env

README = ROOT / "README.md"
README_BASE_URL = "http://127.0.0.1:8000"
SH_BLOCK = re.compile(r"^```sh\n(.*?)^```[ \t]*$", re.M | re.S)
NAME = r"[A-Za-z_][A-Za-z0-9_]*"
CURL = re.compile(r"(?<![\w./-])curl\s")
RUNNER = re.compile(r"^\.venv/bin/python\s+scripts/agent_runner\.py(\s|$)")
MAKE_RUN = re.compile(rf"^((?:{NAME}=\S*\s+)*)make\s+run(\s|$)")
ASSIGNMENT = re.compile(rf"^{NAME}=")
WALK_SECONDS = 120

CURL_FUNCTION = r"""
set -euo pipefail
shopt -s inherit_errexit
curl() {
  local err status=0 code
  err=$(mktemp)
  command curl --write-out '%{stderr}README-HTTP-STATUS %{http_code}\n' "$@" 2>"$err" \
    || status=$?
  code=$(sed -n 's/^README-HTTP-STATUS //p' "$err" | tail -n 1)
  grep -v '^README-HTTP-STATUS ' "$err" >&2 || true
  rm -f "$err"
  printf '%s\t%s\t%s\n' "$status" "${code:-none}" "curl $*" >> "$README_CURL_LOG"
  if [ "$status" -eq 0 ] && [[ "$code" != 2?? ]]; then status=22; fi
  return "$status"
}
"""


@dataclass
class Walk:
    """The commands of the README's walk, and the server they expect."""

    server_env: dict[str, str] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    curls: int = 0
    runners: int = 0


def logical_lines(block: str) -> list[str]:
    """The block's commands, each with its ``\\`` continuation lines."""
    lines: list[str] = []
    pending = ""
    for line in block.splitlines():
        pending += line
        if line.endswith("\\"):
            pending += "\n"
            continue
        lines.append(pending)
        pending = ""
    if pending:
        lines.append(pending)
    return lines


def is_assignment(line: str) -> bool:
    words = shlex.split(line, comments=True)
    if words[:1] == ["export"]:
        words = words[1:]
    return bool(words) and all(ASSIGNMENT.match(word) for word in words)


def walk_of(markdown: str) -> Walk:
    walk = Walk()
    started = False
    for block in SH_BLOCK.findall(markdown):
        lines = [line for line in logical_lines(block)
                 if line.strip() and not line.lstrip().startswith("#")]
        if not any(CURL.search(line) or RUNNER.match(line.strip()) for line in lines):
            for line in lines:
                make_run = MAKE_RUN.match(line.strip())
                if make_run and not started:
                    walk.server_env = dict(word.split("=", 1)
                                           for word in shlex.split(make_run.group(1)))
            continue
        started = True
        for line in lines:
            command = line.strip()
            if CURL.search(command):
                walk.curls += len(CURL.findall(command))
            elif RUNNER.match(command):
                walk.runners += 1
            elif not is_assignment(command):
                raise AssertionError(f"README: this line of the walk is not a curl command, a "
                                     f"runner command or an assignment: {command!r}")
            walk.lines.append(line)
    return walk


def run_walk(walk: Walk, server: GunicornServer, folder: Path,
             token: str | None) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    """Run the walk with bash; its result and one [exit status, HTTP status, command] per
    curl that ran."""
    log = folder / "curl.log"
    log.touch()
    env = {**runner_env(server.base_url, folder / "logs"), "README_CURL_LOG": str(log)}
    if token:
        env["AGENT_API_TOKEN"] = token
    python = ".venv/bin/python"
    if not (ROOT / python).exists():
        python = shlex.quote(sys.executable)
    lines = [line.replace(README_BASE_URL, server.base_url) for line in walk.lines]
    lines = [RUNNER.sub(lambda m: f"{python} scripts/agent_runner.py{m.group(1)}", line.strip())
             if RUNNER.match(line.strip()) else line for line in lines]
    script = CURL_FUNCTION + "\n".join(lines) + "\n"
    result = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=WALK_SECONDS, stdin=subprocess.DEVNULL)
    calls = [line.split("\t", 2) for line in log.read_text().splitlines()]
    return result, calls


@pytest.fixture
def walk() -> Walk:
    if not shutil.which("curl"):
        if os.environ.get("CI") == "true":
            pytest.fail("curl is not installed; the README's examples need it")
        pytest.skip("curl is not installed (apt-get install curl)")
    return walk_of(README.read_text())


@pytest.fixture
def served(walk: Walk, tmp_path: Path):
    """The server the README's walk talks to, and its token if the walk needs one."""
    logs_dir = tmp_path / "logs"
    logs_dir.mkdir()
    token = secrets.token_urlsafe(32) if any("AGENT_API_TOKEN" in line
                                             for line in walk.lines) else None
    env = {**walk.server_env, **({"AGENT_API_TOKEN": token} if token else {})}
    server = GunicornServer(logs_dir, env=env).start()
    yield server, token
    server.stop()


def failure_report(result: subprocess.CompletedProcess[str], calls: list[list[str]]) -> str:
    return (f"exit status {result.returncode}\ncurl calls (exit status, HTTP status, command):\n"
            + "\n".join("  ".join(call) for call in calls)
            + f"\nstdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}")


def test_the_readme_walk_works_as_written(walk: Walk, served, tmp_path: Path) -> None:
    assert walk.curls >= 3 and walk.runners >= 1, "README: the walk lost its examples"
    server, token = served
    result, calls = run_walk(walk, server, tmp_path, token)
    report = failure_report(result, calls)
    assert result.returncode == 0, report
    assert len(calls) == walk.curls, report
    for status, http_status, command in calls:
        assert status == "0" and re.fullmatch(r"2\d\d", http_status), report

    # What the walk says happened: the runner completed every task it created, and the
    # metrics count each of them once.
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    listed = requests.get(f"{server.base_url}/api/agent/tasks?limit=500", headers=headers,
                          timeout=10).json()
    assert listed["total"] >= 1, report
    assert {task["status"] for task in listed["tasks"]} == {"completed"}, listed
    metrics = requests.get(f"{server.base_url}/api/agent/metrics", headers=headers,
                           timeout=10).json()
    assert metrics["success_rate"]["total"] == listed["total"], metrics


def test_a_readme_example_with_a_wrong_path_fails(served, tmp_path: Path) -> None:
    """The check above can fail: the same walk with one path misspelt does."""
    markdown = README.read_text()
    assert f"{README_BASE_URL}/api/agent/metrics" in markdown
    wrong = walk_of(markdown.replace(f"{README_BASE_URL}/api/agent/metrics",
                                     f"{README_BASE_URL}/api/agent/metric"))
    server, token = served
    result, calls = run_walk(wrong, server, tmp_path, token)
    assert result.returncode != 0, failure_report(result, calls)
    assert calls and calls[-1][1] == "404", failure_report(result, calls)
