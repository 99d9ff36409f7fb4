"""Running one task's command.

The command is split with ``shlex`` into an argv list and started without a shell, in a
new session (so its own process group), with stdout and stderr going into one pipe that
the runner reads as the command runs (into a :class:`TaskOutput`). Whatever ends the run
(exit, timeout, the runner stopping, the lease lost, a log that cannot be written), the
whole group is killed before the leader is reaped, so nothing it started lingers.
"""
from __future__ import annotations

import os
import select
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from app.runner.output import TaskOutput

KILL_GRACE_SECONDS = 5.0
"""How long a group has between SIGTERM and SIGKILL."""
DRAIN_SECONDS = 5.0
"""How long the pipe is read after the group is killed: a process that left the group
could keep it open for ever."""
POLL_SECONDS = 0.05
CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True)
class Ended:
    exit_code: int | None
    """The exit status (negative: the signal) if the command ended by itself, else None."""
    note: str | None
    """Why the run failed, for the end of the output; None if it exited 0."""


@dataclass(frozen=True)
class Limits:
    """What ends a run early."""

    timeout: float
    stop: threading.Event
    """Set when the runner stops."""
    lost: threading.Event
    """Set when another runner holds the task now."""


def runner_error(exc: BaseException) -> str:
    return f"runner error: {type(exc).__name__}: {exc}"


def run_command(
    command: str, output: TaskOutput, *, workdir: Path, env: Mapping[str, str], limits: Limits
) -> Ended:
    """Run ``command`` to its end, its output going to ``output``.

    Errors of the runner itself (a ``ValueError`` from ``Popen`` for an argument holding
    a NUL byte, ...) are raised, after the command's group is killed if it started.
    """
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        return Ended(None, f"cannot start: {exc}")
    if not argv:
        return Ended(None, "cannot start: empty command")
    if limits.stop.is_set():
        return Ended(None, "interrupted before it started: the runner was stopped")
    try:
        process = subprocess.Popen(
            argv, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
    except OSError as exc:
        return Ended(None, f"cannot start {argv[0]}: {exc.strerror or exc}")
    assert process.stdout is not None
    with process.stdout as pipe:
        try:
            note = _supervise(process.pid, pipe.fileno(), output, limits)
        finally:
            _signal_group(process.pid, signal.SIGKILL)
            code = process.wait()
    if note is not None:
        return Ended(None, note)
    if code == 0:
        return Ended(0, None)
    return Ended(code, f"exit status {code}" if code > 0
                 else f"killed by {signal.Signals(-code).name}")


def _supervise(pid: int, fd: int, output: TaskOutput, limits: Limits) -> str | None:
    """Read the output until the leader exits; None if it exited by itself, else why
    it was stopped. The leader is left unreaped, so its group id stays taken."""
    deadline = time.monotonic() + limits.timeout
    note = None
    kill_at = float("inf")
    reading = True
    while not _has_exited(pid):
        if reading:
            reading = _read_some(fd, output)
        else:
            time.sleep(POLL_SECONDS)
        if note is None:
            note = _why_stop(limits, deadline, output)
            if note is not None:
                _signal_group(pid, signal.SIGTERM)
                kill_at = time.monotonic() + KILL_GRACE_SECONDS
        elif time.monotonic() >= kill_at:
            _signal_group(pid, signal.SIGKILL)
    _signal_group(pid, signal.SIGKILL)
    drained_by = time.monotonic() + DRAIN_SECONDS
    while reading and time.monotonic() < drained_by:
        reading = _read_some(fd, output)
    return note


def _read_some(fd: int, output: TaskOutput) -> bool:
    """Read what the pipe holds (waiting a moment for it); False at its end."""
    ready, _, _ = select.select([fd], [], [], POLL_SECONDS)
    if not ready:
        return True
    chunk = os.read(fd, CHUNK_BYTES)
    if chunk:
        output.write(chunk)
    return bool(chunk)


def _why_stop(limits: Limits, deadline: float, output: TaskOutput) -> str | None:
    if limits.stop.is_set():
        return "interrupted: the runner was stopped"
    if limits.lost.is_set():
        return "stopped: another runner holds the task now"
    if output.log_error is not None:
        return runner_error(output.log_error)
    if time.monotonic() >= deadline:
        return f"timeout after {limits.timeout:g} s"
    return None


def _has_exited(pid: int) -> bool:
    """Whether the leader has exited, leaving it unreaped (so its group id stays taken)."""
    flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
    return os.waitid(os.P_PID, pid, flags) is not None


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass
