"""Running one task's command.

The command is split with ``shlex`` into an argv list and started without a shell, in a
new session (so its own process group), with stdout and stderr going straight into the
task's log file as it runs. Whatever ends the run (exit, timeout, the runner stopping),
the whole group is killed before the leader is reaped, so nothing it started lingers.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

OUTPUT_LIMIT_BYTES = 64 * 1024
KILL_GRACE_SECONDS = 5.0
POLL_SECONDS = 0.05


@dataclass(frozen=True)
class Outcome:
    status: str
    """``completed`` (exit status 0) or ``failed``."""
    output: str
    """The tail of the log: at most ``OUTPUT_LIMIT_BYTES`` of UTF-8."""
    duration_seconds: float


def run_command(
    command: str, log_path: Path, *, workdir: Path, timeout: float, stop: threading.Event
) -> Outcome:
    """Run ``command``; ``stop`` being set interrupts it. Notes go to the end of the log."""
    started = time.monotonic()
    try:
        log = open(log_path, "w+b")
    except OSError as exc:
        return Outcome("failed", f"[cannot open {log_path}: {exc.strerror or exc}]\n", 0.0)
    with log:
        note = _run(command, log, workdir=workdir, timeout=timeout, stop=stop)
        duration = round(time.monotonic() - started, 6)
        if note:
            _append_note(log, note)
    return Outcome("failed" if note else "completed", read_tail(log_path), duration)


def _run(
    command: str, log: BinaryIO, *, workdir: Path, timeout: float, stop: threading.Event
) -> str | None:
    """Run to the end; None if it exited 0, else a note saying why it failed."""
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        return f"cannot start: {exc}"
    if not argv:
        return "cannot start: empty command"
    if stop.is_set():
        return "interrupted before it started: the runner was stopped"
    try:
        process = subprocess.Popen(
            argv, cwd=workdir, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
    except OSError as exc:
        return f"cannot start {argv[0]}: {exc.strerror or exc}"
    deadline = time.monotonic() + timeout
    note = None
    while not _has_exited(process.pid):
        if stop.is_set():
            note = "interrupted: the runner was stopped"
        elif time.monotonic() >= deadline:
            note = f"timeout after {timeout:g} s"
        if note:
            _terminate(process.pid)
            break
        stop.wait(POLL_SECONDS)
    _signal_group(process.pid, signal.SIGKILL)
    code = process.wait()
    if note is None and code != 0:
        note = f"exit status {code}" if code > 0 else f"killed by {signal.Signals(-code).name}"
    return note


def _has_exited(pid: int) -> bool:
    """Whether the leader has exited, leaving it unreaped (so its group id stays taken)."""
    flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
    return os.waitid(os.P_PID, pid, flags) is not None


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


def _terminate(pgid: int) -> None:
    """SIGTERM to the group, and a grace period for its leader to exit."""
    _signal_group(pgid, signal.SIGTERM)
    give_up = time.monotonic() + KILL_GRACE_SECONDS
    while not _has_exited(pgid) and time.monotonic() < give_up:
        time.sleep(POLL_SECONDS)


def _append_note(log: BinaryIO, note: str) -> None:
    end = log.seek(0, os.SEEK_END)
    if end:
        log.seek(end - 1)
        if log.read(1) != b"\n":
            log.write(b"\n")
    log.write(f"[{note}]\n".encode())


def read_tail(path: Path, limit: int = OUTPUT_LIMIT_BYTES) -> str:
    """The end of a file as text, at most ``limit`` bytes once encoded as UTF-8."""
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(size - limit, 0))
        text = handle.read().decode("utf-8", "replace")
    encoded = text.encode()
    if len(encoded) > limit:
        text = encoded[-limit:].decode("utf-8", "ignore")
    return text
