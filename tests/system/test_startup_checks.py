"""Settings that cannot work stop the server, the flask commands and the runner at start,
with one line naming the setting (never a traceback), and a non-zero exit."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.servers import RUNNER
from tests.support.stores import seed_lines, stored_records
from tests.support import ROOT, free_port

GOOD_TOKEN = "a-token-of-32-characters-0123456"


def run(argv: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=ROOT, env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def serve(env: dict[str, str]) -> subprocess.CompletedProcess:
    """``make run``'s command; it must exit at once for these settings."""
    return run([sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"],
               env)


def flask(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "flask", "--app", "wsgi", *args], env)


def one_line(result: subprocess.CompletedProcess, *expected: str) -> str:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert all(part in lines[0] for part in expected), lines[0]
    return lines[0]


@pytest.fixture
def bad_routing(tmp_path: Path) -> Path:
    path = tmp_path / "routing.json"
    path.write_text(json.dumps({"impl": {"command": "not a list"}, "docs": {}}))
    return path


@pytest.fixture
def env(logs_dir: Path) -> dict[str, str]:
    return {"AGENT_LOGS_DIR": str(logs_dir), "AGENT_BIND": f"127.0.0.1:{free_port()}"}


@pytest.mark.parametrize("setting,expected", [
    ({"AGENT_BIND": "0.0.0.0:{port}"}, ("AGENT_BIND=0.0.0.0", "no token is configured")),
    ({"AGENT_BIND": "[::]:{port}"}, ("AGENT_BIND=[::]", "AGENT_API_TOKEN")),
    ({"AGENT_WORKERS": "abc"}, ("AGENT_WORKERS",)),
    ({"AGENT_THREADS": "0"}, ("AGENT_THREADS",)),
    ({"METRICS_WINDOW_DAYS": "abc"}, ("METRICS_WINDOW_DAYS", "'abc'")),
    ({"AGENT_METRICS_MAX_MODELS": "-1"}, ("AGENT_METRICS_MAX_MODELS",)),
    ({"AGENT_API_TOKEN": "short"}, ("AGENT_API_TOKEN", "at least 16")),
    ({"AGENT_API_TOKEN": f" {GOOD_TOKEN} "}, ("AGENT_API_TOKEN", "whitespace")),
    ({"AGENT_API_TOKEN": "tøken-with-ünicode-0123456789"}, ("AGENT_API_TOKEN", "ASCII")),
])
def test_the_server_refuses_to_start(env, setting, expected) -> None:
    port = env["AGENT_BIND"].rsplit(":", 1)[1]
    line = one_line(serve({**env, **{k: v.format(port=port) for k, v in setting.items()}}),
                    *expected)
    assert "tøken" not in line and GOOD_TOKEN not in line  # a token is never echoed


def test_the_server_refuses_a_malformed_tokens_file(env, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    tokens.write_text('{"tokens": [{"name": "prometheus", "role": "reader"}]}')
    one_line(serve({**env, "AGENT_API_TOKENS_FILE": str(tokens)}),
             "AGENT_API_TOKENS_FILE", "malformed", "role", "sha256")


def test_the_server_refuses_an_unusable_routing_file(env, bad_routing) -> None:
    line = one_line(serve({**env, "AGENT_ROUTING_FILE": str(bad_routing)}),
                    str(bad_routing), "impl.command", "docs")
    assert "defaultdict" not in line


def test_a_routing_entry_without_end_of_options_is_refused_naming_it(env, tmp_path) -> None:
    routing = tmp_path / "routing.json"
    routing.write_text(json.dumps({"review": {"command": ["my-cli", "--model", "{model}",
                                                          "{direction}"]}}))
    one_line(serve({**env, "AGENT_ROUTING_FILE": str(routing)}),
             str(routing), 'entry "review"', '"--"', "accepts_end_of_options")


def test_beyond_loopback_with_a_token_starts(env) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"],
        cwd=ROOT, env={**os.environ, **env, "AGENT_BIND": f"0.0.0.0:{port}",
                       "AGENT_API_TOKEN": GOOD_TOKEN},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(timeout=5)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_flask_commands_say_what_is_wrong_in_one_line(env, bad_routing) -> None:
    one_line(flask({**env, "METRICS_WINDOW_DAYS": "abc"}, "metrics", "show"),
             "METRICS_WINDOW_DAYS")
    shown = flask({**env, "AGENT_ROUTING_FILE": str(bad_routing)}, "metrics", "show")
    assert shown.returncode == 0 and "No records in this window" in shown.stdout, shown.stderr


def test_keep_days_0_needs_yes(env, logs_dir) -> None:
    seed_lines(logs_dir, "metrics.jsonl", [{
        "task_id": "t", "task_type": "spec", "model": "m", "duration_seconds": 1,
        "status": "completed", "created_at": "2026-01-01T00:00:00+00:00"}])
    refused = flask(env, "metrics", "compact", "--keep-days", "0")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert len(stored_records(logs_dir)) == 1
    done = flask(env, "metrics", "compact", "--keep-days", "0", "--yes")
    assert done.returncode == 0 and "kept 0" in done.stdout
    assert stored_records(logs_dir) == []


@pytest.mark.parametrize("setting,expected", [
    ({"AGENT_API_TOKEN": "tøken-with-ünicode-0123456789"}, "AGENT_API_TOKEN"),
    ({"AGENT_API_TOKEN": f"{GOOD_TOKEN}\n"}, "AGENT_API_TOKEN"),
    ({"AGENT_API_TOKEN": "short"}, "AGENT_API_TOKEN"),
    ({"AGENT_TASK_TIMEOUT": "abc"}, "AGENT_TASK_TIMEOUT"),
    ({"AGENT_TASK_LOG_MAX_BYTES": "10"}, "AGENT_TASK_LOG_MAX_BYTES"),
])
def test_the_runner_refuses_settings_in_one_line_with_status_2(env, setting, expected) -> None:
    result = run([sys.executable, str(RUNNER), "--once"],
                 {**env, "AGENT_API_BASE": f"http://127.0.0.1:{free_port()}", **setting})
    assert result.returncode == 2
    assert one_line(result, expected).startswith("agent_runner: ")
