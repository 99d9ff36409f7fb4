"""The runner's parts on their own: the capped task log, the outbox, the output streams,
the output conventions, its settings."""
from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import pytest

from app import config
from app.runner.conventions import Progress, decision_prompt, parse_line
from app.runner.api import TaskApi
from app.runner.outbox import Outbox
from app.runner.output import LOG_APPEND_LIMIT_BYTES, TaskOutput
from app.runner.reports import Reports
from app.runner.settings import runner_from_env
from app.runner.tail import complete_utf8, text_within
from app.runner.task_log import CappedLog, left_out_line, prune_task_logs


def stream(size: int) -> bytes:
    return b"".join(f"{number:08d}\n".encode() for number in range(size // 9 + 1))[:size]


@pytest.mark.parametrize("max_bytes", [4096, 65536])
def test_a_capped_log_keeps_the_first_and_the_last_half(tmp_path: Path, max_bytes: int):
    path = tmp_path / "task.log"
    data = stream(40 * max_bytes + 123)
    log = CappedLog(path, max_bytes)
    chunks = random.Random(7)
    written = 0
    while written < len(data):
        size = chunks.randint(1, max_bytes // 3)
        log.write(data[written:written + size])
        written += size
        assert path.stat().st_size <= max_bytes + len(left_out_line(len(data)))
    log.close()
    half = max_bytes // 2
    assert path.read_bytes() == (data[:half] + left_out_line(len(data) - max_bytes)
                                 + data[-half:])


def test_a_log_that_fits_is_kept_whole(tmp_path: Path):
    path = tmp_path / "task.log"
    log = CappedLog(path, 4096)
    for chunk in (b"a" * 3000, b"b" * 1096):
        log.write(chunk)
    log.close()
    assert path.read_bytes() == b"a" * 3000 + b"b" * 1096


def test_task_logs_older_than_the_kept_days_are_removed(tmp_path: Path):
    old, recent, other = (tmp_path / name for name in ("task_a.log", "task_b.log", "notes"))
    for path in (old, recent, other):
        path.write_text("x")
    month_ago = time.time() - 30 * 86400
    for path in (old, other):
        os.utime(path, (month_ago, month_ago))
    assert prune_task_logs(tmp_path, 14) == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes", "task_b.log"]


def test_a_report_is_fsynced_before_it_is_renamed_then_the_folder_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    events: list[tuple] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        events.append(("fsync", path, Path(path).read_bytes() if Path(path).is_file() else None))
        real_fsync(fd)

    def replace(source: str, target: str) -> None:
        events.append(("rename", str(source), str(target)))
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    body = {"runner_id": "r", "status": "completed", "output": "é\n", "duration_seconds": 1.5}
    Outbox(tmp_path).put("abc", body)
    final = tmp_path / "abc.json"
    [(_, synced, content), (_, source, target), (_, folder, _)] = events
    assert [event[0] for event in events] == ["fsync", "rename", "fsync"]
    assert synced == source and Path(source).parent == tmp_path and target == str(final)
    assert json.loads(content) == {"task_id": "abc", "body": body}
    assert folder == str(tmp_path)
    assert json.loads(final.read_text()) == {"task_id": "abc", "body": body}


def test_a_report_that_cannot_be_saved_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError):
        Outbox(tmp_path).put("abc", {"status": "completed"})
    assert list(tmp_path.iterdir()) == []


def test_the_outbox_lists_reports_oldest_first_and_skips_what_it_cannot_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    outbox = Outbox(tmp_path)
    for number, task_id in enumerate(("b", "a", "c")):
        outbox.put(task_id, {"n": number})
        os.utime(outbox.path(task_id), ns=(number * 10**9, number * 10**9))
    outbox.remove("c")
    (tmp_path / "broken.json").write_text("{")
    (tmp_path / ".x.123.tmp").write_text("{")
    assert outbox.reports() == [("b", {"n": 0}), ("a", {"n": 1})]
    assert "broken.json: not a report" in caplog.text
    outbox.discard_partial()
    left = sorted(path.name for path in tmp_path.iterdir())
    assert left == ["a.json", "b.json", "broken.json"]


def test_a_report_delivered_while_the_outbox_is_read_is_no_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
):
    outbox = Outbox(tmp_path)
    outbox.put("sent", {"n": 1})
    outbox.put("waiting", {"n": 2})
    listed = outbox._files

    def listed_then_delivered() -> list[Path]:
        paths = listed()
        outbox.remove("sent")
        return paths

    monkeypatch.setattr(outbox, "_files", listed_then_delivered)
    assert outbox.reports() == [("waiting", {"n": 2})]
    assert "not a report" not in caplog.text


class RecordedReports(TaskApi):
    """Takes every report, noting the task ids."""

    def __init__(self) -> None:
        self.reported: list[str] = []

    def report(self, task_id: str, body: dict) -> None:
        self.reported.append(task_id)


def test_a_fresh_report_is_sent_once_by_its_worker_not_by_the_background_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    api = RecordedReports()
    outbox = Outbox(tmp_path)
    reports = Reports(api, outbox)
    put = outbox.put

    def put_then_a_pass_over_the_outbox(task_id: str, body: dict) -> None:
        put(task_id, body)
        reports.replay()  # what the background thread may do just then

    monkeypatch.setattr(outbox, "put", put_then_a_pass_over_the_outbox)
    assert reports.submit("abc", {"status": "completed"})
    assert api.reported == ["abc"]
    assert outbox.count() == 0


def test_output_goes_to_heartbeats_once_and_never_splits_a_character(tmp_path: Path):
    output = TaskOutput()
    output.open_log(tmp_path / "task.log", 4096)
    output.write(b"::progress:: 12.5 building the thing\nhalf a char: \xc3")
    fields, offset = output.update()
    assert fields == {"progress_pct": 12.5, "current_step": "building the thing",
                      "log_append": "::progress:: 12.5 building the thing\nhalf a char: "}
    output.sent(offset)
    output.write(b"\xa9\n::progress:: 150 too much\n::progress:: 60\n")
    fields, offset = output.update()
    assert fields == {"progress_pct": 60.0,
                      "log_append": "é\n::progress:: 150 too much\n::progress:: 60\n"}
    output.sent(offset)
    assert output.update()[0] == {"progress_pct": 60.0}
    output.note("exit status 1")
    assert output.rest() == "[exit status 1]\n"
    output.close_log()
    assert (tmp_path / "task.log").read_text().endswith("::progress:: 60\n[exit status 1]\n")


def test_output_due_beyond_one_patch_is_its_newest_part_after_a_left_out_line():
    output = TaskOutput()
    data = stream(3 * LOG_APPEND_LIMIT_BYTES)
    output.write(data)
    fields, _ = output.update()
    text = fields["log_append"]
    assert len(text.encode()) <= LOG_APPEND_LIMIT_BYTES
    marker, _, rest = text[1:].partition("\n")
    kept = len(rest.encode())
    assert marker == f"[... {len(data) - kept} bytes left out ...]"
    assert rest.encode() == data[-kept:]


def test_a_log_that_cannot_be_written_is_dropped_and_the_error_kept():
    output = TaskOutput()
    output.open_log(Path("/dev/full"), 4096)
    output.write(b"hello\n")
    assert isinstance(output.log_error, OSError) and output.log_error.errno == 28
    output.write(b"more\n")
    output.close_log()
    assert output.text() == "hello\nmore\n"


def test_text_is_cut_on_character_boundaries():
    assert text_within("aé€😀".encode(), 7) == "€😀"
    assert text_within(b"\xff" * 10, 7) == "\ufffd\ufffd"
    assert complete_utf8("a€".encode()[:-1]) == 1
    assert complete_utf8("a😀".encode()) == 5
    assert complete_utf8(b"abc") == 3


@pytest.mark.parametrize("line,expected", [
    ("::progress:: 40 compiling\n", Progress(40.0, "compiling")),
    ("::progress:: 100\r\n", Progress(100.0, "")),
    ("::progress:: 0 " + "x" * 600, Progress(0.0, "x" * 500)),
    ("::progress:: 101 too far", None),
    ("::progress:: nan steps", None),
    ("::progress::40 no space", None),
    ("  ::progress:: 40 indented", None),
])
def test_progress_lines(line: str, expected: Progress | None):
    assert parse_line(line) == expected


@pytest.mark.parametrize("output,expected", [
    ("work\n::needs-decision:: ship it?\n\n  \n", "ship it?"),
    ("::needs-decision:: ship it?\nthen more\n", None),
    ("::needs-decision::   \n", None),
    ("", None),
])
def test_decision_requests(output: str, expected: str | None):
    assert decision_prompt(output) == expected


def test_runner_settings_defaults(tmp_path: Path):
    settings = runner_from_env({"AGENT_WORKDIR": str(tmp_path)})
    assert settings.runner_dir == config.PROJECT_ROOT / "logs" / "runner"
    assert (settings.task_log_max_bytes, settings.task_log_keep_days) == (10 * 1024**2, 14)
    assert (settings.task_timeout, settings.cancel_grace_seconds) == (3600, 10)
    assert settings.api_base == "http://127.0.0.1:8000"


@pytest.mark.parametrize("name,value", [
    ("AGENT_TASK_LOG_MAX_BYTES", "10MB"), ("AGENT_TASK_LOG_MAX_BYTES", "100"),
    ("AGENT_TASK_LOG_KEEP_DAYS", "0"), ("AGENT_TASK_TIMEOUT", "-1"),
    ("AGENT_CANCEL_GRACE_SECONDS", "0"), ("AGENT_CANCEL_GRACE_SECONDS", "inf"),
    ("AGENT_API_BASE", "127.0.0.1:8000"), ("AGENT_WORKDIR", "/no/such/folder"),
])
def test_bad_runner_settings_name_the_variable(name: str, value: str):
    with pytest.raises(config.ConfigError, match=name):
        runner_from_env({name: value})
