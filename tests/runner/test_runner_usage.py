"""What a task used and who ran it, on the runner's side: usage read from a Claude Code
result object or a ``::usage::`` line, and the ``executor`` named in every final report."""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from app.runner.conventions import parse_line
from app.runner.output import MAX_LINE_BYTES, MAX_RESULT_LINE_BYTES, TaskOutput
from app.runner.settings import MAX_EXECUTOR_CHARS, runner_from_env
from app.runner.usage import MAX_COST_USD, MAX_TOKENS, UsageLine, result_usage
from app.shared_settings import ConfigError
from bench.servers import runner_env
from tests.runner.stand_in import StandIn, sent, serving, task
from tests.runner.test_runner_retries import sh
from tests.support.runner import run_runner

TOKENS = {"input_tokens": 12, "output_tokens": 42, "cache_read_input_tokens": 6789,
          "cache_creation_input_tokens": 345}
USAGE = {**TOKENS, "cost_usd": 0.0123}


def result(**changes: Any) -> dict[str, Any]:
    """A result object as ``claude -p --output-format json`` prints it."""
    return {"type": "result", "subtype": "success", "is_error": False, "duration_ms": 2345,
            "num_turns": 1, "result": "Done.", "session_id": "5b0c", "total_cost_usd": 0.0123,
            "usage": {**TOKENS, "server_tool_use": {"web_search_requests": 0},
                      "service_tier": "standard"},
            "permission_denials": [], **changes}


def test_a_result_object_gives_its_tokens_and_its_total_cost():
    assert result_usage(json.dumps(result())) == USAGE
    assert result_usage(json.dumps(result(total_cost_usd=0))) == {**TOKENS, "cost_usd": 0.0}


@pytest.mark.parametrize("value", [True, -1, 1.5, "12", None, MAX_TOKENS + 1, [1], {"n": 1}])
def test_a_token_count_of_the_wrong_kind_is_left_out(value: Any):
    tokens = {**TOKENS, "output_tokens": value}
    usage = result_usage(json.dumps(result(usage=tokens)))
    assert usage == {key: number for key, number in USAGE.items() if key != "output_tokens"}


@pytest.mark.parametrize("value", [True, -0.5, "0.1", None, float("nan"), float("inf"),
                                   MAX_COST_USD * 1.01, 10**400])
def test_a_cost_of_the_wrong_kind_is_left_out(value: Any):
    assert result_usage(json.dumps(result(total_cost_usd=value))) == TOKENS


@pytest.mark.parametrize("changes,expected", [
    ({"usage": "lots"}, {"cost_usd": 0.0123}),
    ({"usage": {**TOKENS, "cost_usd": 9}, "cost_usd": 9, "total_cost_usd": None}, TOKENS),
    ({"usage": {}, "total_cost_usd": None}, {}),
])
def test_only_the_result_objects_own_fields_count(changes: dict[str, Any], expected: dict):
    assert result_usage(json.dumps(result(**changes))) == expected


@pytest.mark.parametrize("text", [
    json.dumps(result(type="assistant")),
    json.dumps([result()]),
    json.dumps(result())[:-1],
    json.dumps(result()) + " {}",
    '{"type": "result", "deep": ' + "[" * 100_000 + "]" * 100_000 + "}",
    '{"type": "result", "usage": {"input_tokens": 1' + "0" * 5000 + "}}",
    "::usage:: {}",
])
def test_what_is_no_result_object_gives_nothing(text: str):
    assert result_usage(text) is None


@pytest.mark.parametrize("line,expected", [
    ('::usage:: {"input_tokens": 12, "output_tokens": 42, "cache_read_input_tokens": 6789, '
     '"cache_creation_input_tokens": 345, "cost_usd": 0.0123}\n', UsageLine(USAGE)),
    ('::usage:: {"output_tokens": 3, "model": "x"}\r\n', UsageLine({"output_tokens": 3})),
    ('::usage::{"cost_usd": 2}', UsageLine({"cost_usd": 2.0})),
    (f'::usage:: {{"input_tokens": {MAX_TOKENS}, "cost_usd": {MAX_COST_USD}}}',
     UsageLine({"input_tokens": MAX_TOKENS, "cost_usd": MAX_COST_USD})),
    ("::usage:: {oops", UsageLine(problem="not a JSON object")),
    ("::usage:: [1]", UsageLine(problem="not a JSON object")),
    ("::usage::", UsageLine(problem="not a JSON object")),
    ('::usage:: {"tokens": 3}', UsageLine(problem="none of input_tokens, output_tokens, "
                                          "cache_read_input_tokens, "
                                          "cache_creation_input_tokens, cost_usd")),
    ('::usage:: {"input_tokens": 1, "output_tokens": -2, "cost_usd": "1"}',
     UsageLine(problem="not a usable value: output_tokens, cost_usd")),
    (' ::usage:: {"input_tokens": 1}', None),
    ('::usages:: {"input_tokens": 1}', None),
])
def test_usage_lines(line: str, expected: UsageLine | None):
    assert parse_line(line) == expected


def test_the_last_result_object_of_a_stream_counts_whole_even_beyond_a_short_line():
    output = TaskOutput()
    answer = "x" * (50 * MAX_LINE_BYTES)
    stream = "\n".join(json.dumps(each) for each in (
        {"type": "system", "subtype": "init"}, result(total_cost_usd=5),
        {"type": "assistant", "message": {"content": "the result"}},
        result(result=answer, total_cost_usd=None),
    )) + "\n"
    data = stream.encode()
    for start in range(0, len(data), 1000):  # as a pipe gives it, in pieces
        output.write(data[start:start + 1000])
    assert output.usage == TOKENS


def test_a_usage_line_counts_whole_and_its_keys_win_over_the_result_objects():
    output = TaskOutput()
    output.write(json.dumps(result()).encode() + b"\n")
    output.write(b'::usage:: {"input_tokens": 1, "cost_usd": 1}\n'
                 b'::usage:: {"input_tokens": 7, "output_tokens": 8}\n'
                 b'::usage:: {oops\n::usage:: {"tokens": 1}\n')
    assert output.usage == {**USAGE, "input_tokens": 7, "output_tokens": 8}
    assert output.usage_ignored == (2, "not a JSON object")


def test_the_whole_output_and_its_last_line_count_once_it_has_ended():
    pretty = TaskOutput()
    pretty.write(json.dumps(result(), indent=2).encode())
    unended = TaskOutput()
    unended.write(b'work\n::usage:: {"output_tokens": 3}')
    assert pretty.usage == unended.usage == {}
    for output in (pretty, unended):
        output.end()
        output.note("exit status 1")
    assert (pretty.usage, unended.usage) == (USAGE, {"output_tokens": 3})
    assert unended.text() == 'work\n::usage:: {"output_tokens": 3}\n[exit status 1]\n'


def test_a_line_too_long_to_be_kept_tells_nothing_and_the_next_ones_count():
    output = TaskOutput()
    too_long = json.dumps(result(result="x" * MAX_RESULT_LINE_BYTES)).encode()
    for start in range(0, len(too_long), 65536):
        output.write(too_long[start:start + 65536])
    output.write(b"\n")
    assert output.usage == {}
    output.write(b'::usage:: {"output_tokens": 3}\n')
    assert output.usage == {"output_tokens": 3}


def test_the_executor_is_the_host_name_unless_set(tmp_path: Path):
    env = {"AGENT_WORKDIR": str(tmp_path)}
    assert runner_from_env(env).executor == socket.gethostname()
    assert runner_from_env({**env, "AGENT_EXECUTOR": "box 7"}).executor == "box 7"
    for bad in ("  ", "x" * (MAX_EXECUTOR_CHARS + 1)):
        with pytest.raises(ConfigError, match="AGENT_EXECUTOR"):
            runner_from_env({**env, "AGENT_EXECUTOR": bad})


@pytest.mark.parametrize("setting,line", [
    ({"AGENT_EXECUTOR": "x" * 201}, "AGENT_EXECUTOR must be at most 200 characters, not 201"),
    ({"--executor": ""}, "--executor must not be empty"),
    ({"--executor": "x" * 300}, "--executor must be at most 200 characters, not 300"),
])
def test_an_executor_name_that_cannot_be_used_is_one_line(tmp_path: Path,
                                                          setting: dict[str, str], line: str):
    env = runner_env("http://127.0.0.1:9", tmp_path / "logs", **{
        name: value for name, value in setting.items() if not name.startswith("-")})
    options = [part for name, value in setting.items() if name.startswith("-")
               for part in (name, value)]
    status, stderr = run_runner(env, "--once", *options, timeout=30)
    assert (status, stderr) == (2, f"agent_runner: {line}\n")


def fake_claude(folder: Path) -> dict[str, str]:
    """A ``claude`` on PATH that prints a result object, as ``-p --output-format json``
    does (without a newline at the end); the environment to find it in."""
    folder.mkdir()
    program = folder / "claude"
    program.write_text(f"#!/bin/sh\nprintf '%s' '{json.dumps(result())}'\n")
    program.chmod(0o755)
    return {"PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}


def reports(handler: type[StandIn]) -> dict[str, dict[str, Any]]:
    """The final report of each task, by its id."""
    return {r["path"].rsplit("/", 1)[1]: r["body"] for r in handler.requests
            if r["method"] == "PATCH" and "status" in r["body"]}


def test_reports_carry_what_each_task_used_and_who_ran_it(tmp_path: Path):
    usage_line = json.dumps({**USAGE, "model": "other/cli"})
    tasks = [
        task(1, "claude -p --output-format json 'say hello'"),
        task(2, sh('echo working; echo "::usage:: $1"; exit 3', usage_line)),
        task(3),
        task(4, sh("echo '::usage:: {oops'; echo '::usage:: []'")),
        task(5, sh('echo "::usage:: $1"; echo "::needs-decision:: ship it?"', usage_line)),
    ]
    with serving(StandIn, *tasks) as base_url:
        env = runner_env(base_url, tmp_path / "logs", AGENT_EXECUTOR="not this one",
                         **fake_claude(tmp_path / "bin"))
        status, stderr = run_runner(env, "--once", "--executor", "box 7", timeout=60)
    assert status == 0, stderr
    sent_reports = reports(StandIn)
    by_task = {number: sent_reports[task(number)["id"]] for number in (1, 2, 3, 4, 5)}
    assert {number: body["status"] for number, body in by_task.items()} == {
        1: "completed", 2: "failed", 3: "completed", 4: "completed", 5: "needs_decision"}
    assert by_task[1]["usage"] == by_task[2]["usage"] == USAGE
    assert [number for number, body in by_task.items() if "usage" in body] == [1, 2]
    # The service takes neither with needs_decision: the task goes back to pending.
    assert {number: body.get("executor") for number, body in by_task.items()} == {
        1: "box 7", 2: "box 7", 3: "box 7", 4: "box 7", 5: None}
    assert all("executor" not in body for body in sent(StandIn, "PATCH", "heartbeat"))
    [warning] = [line for line in stderr.splitlines() if "WARNING" in line]
    assert warning.endswith(f"task {task(4)['id']}: 2 ::usage:: line(s) ignored, the first: "
                            "not a JSON object")


def test_the_executor_is_the_host_name_by_default(tmp_path: Path):
    with serving(StandIn, task(1)) as base_url:
        status, stderr = run_runner(runner_env(base_url, tmp_path / "logs"), "--once",
                                    timeout=60)
    assert status == 0, stderr
    [report] = sent(StandIn, "PATCH", "report")
    assert report["executor"] == socket.gethostname()
    assert "usage" not in report
