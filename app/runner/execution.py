"""Running one task's command.

The command is split with ``shlex`` into an argv list; unless its program is one the
runner allows, it is refused without running anything (the command comes from the
service, over a network). It is started without a shell, in a new session (so its own
process group), with stdout and stderr going into one pipe that the runner reads as the
command runs (into a :class:`TaskOutput`), and its tag in the environment (see
:mod:`app.runner.processes`). Whatever ends the run (exit, timeout, the runner stopping,
the lease lost, a request to cancel, a log that cannot be written), the whole group, and
every process carrying the tag outside it, is killed before the leader is reaped, so
nothing it started lingers or holds the pipe.
"""
from __future__ import annotations

import enum
import os
import select
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from app.runner.output import TaskOutput
from app.runner.processes import TAG_VARIABLE, kill_tagged

KILL_GRACE_SECONDS = 5.0
"""How long a group has between SIGTERM and SIGKILL (but after a request to cancel:
:attr:`Limits.cancel_grace`)."""
DRAIN_SECONDS = 5.0
"""How long the pipe is read after the command's processes are killed: one that left the
group and dropped its tag could keep it open for ever."""
POLL_SECONDS = 0.05
CHUNK_BYTES = 64 * 1024


class Cause(enum.Enum):
    """Why the runner stopped a command before it ended by itself."""

    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"
    LOST = "lost"
    RUNNER_ERROR = "runner error"
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class Ended:
    exit_code: int | None
    """The exit status (negative: the signal) if the command ended by itself, else None."""
    note: str | None
    """Why the run failed, for the end of the output; None if it exited 0."""
    cause: Cause | None = None
    """Why the runner stopped it, if it did."""


@dataclass(frozen=True)
class Limits:
    """What ends a run early."""

    timeout: float
    stop: threading.Event
    """Set when the runner stops."""
    lost: threading.Event
    """Set when another runner holds the task now."""
    cancel: threading.Event
    """Set when someone asked to cancel the task."""
    cancel_grace: float
    """How long a group has between SIGTERM and SIGKILL after a request to cancel."""


def runner_error(exc: BaseException) -> str:
    return f"runner error: {type(exc).__name__}: {exc}"


def run_command(
    command: str, output: TaskOutput, *, workdir: Path, env: Mapping[str, str], tag: str,
    programs: Collection[str], limits: Limits,
) -> Ended:
    """Run ``command`` to its end, its output going to ``output``, if its program is
    one of ``programs`` (a name found on ``PATH``, or a path, as the command writes it).

    Errors of the runner itself (a ``ValueError`` from ``Popen`` for an argument holding
    a NUL byte, ...) are raised, after the command's processes are killed if it started.
    """
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        return Ended(None, f"cannot start: {exc}")
    if not argv:
        return Ended(None, "cannot start: empty command")
    if argv[0] not in programs:
        return Ended(None, f"refused: {argv[0]} is not a program this runner may run "
                           "(--allow-program, AGENT_ALLOW_PROGRAMS)")
    if limits.stop.is_set():
        return Ended(None, "interrupted before it started: the runner was stopped",
                     Cause.INTERRUPTED)
    try:
        process = subprocess.Popen(
            argv, cwd=workdir, env={**env, TAG_VARIABLE: tag}, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
    except OSError as exc:
        return Ended(None, f"cannot start {argv[0]}: {exc.strerror or exc}")
    assert process.stdout is not None
    with process.stdout as pipe:
        try:
            stopped = _supervise(process.pid, tag, pipe.fileno(), output, limits)
        except BaseException:
            _kill_all(process.pid, tag)
            raise
        finally:
            code = process.wait()
    if stopped is not None:
        return stopped
    if code == 0:
        return Ended(0, None)
    return Ended(code, f"exit status {code}" if code > 0
                 else f"killed by {signal.Signals(-code).name}")


def _supervise(pid: int, tag: str, fd: int, output: TaskOutput,
               limits: Limits) -> Ended | None:
    """Read the output until the leader exits; None if it exited by itself, else why
    it was stopped. The leader is left unreaped, so its group id stays taken; all the
    command's processes are killed before the rest of the pipe is read."""
    deadline = time.monotonic() + limits.timeout
    stopped = None
    kill_at = float("inf")
    reading = True
    while not _has_exited(pid):
        if reading:
            reading = _read_some(fd, output)
        else:
            time.sleep(POLL_SECONDS)
        if stopped is None:
            stopped = _why_stop(limits, deadline, output)
            if stopped is not None:
                _signal_group(pid, signal.SIGTERM)
                kill_at = time.monotonic() + (limits.cancel_grace
                                              if stopped.cause is Cause.CANCELLED
                                              else KILL_GRACE_SECONDS)
        elif time.monotonic() >= kill_at:
            _signal_group(pid, signal.SIGKILL)
    _kill_all(pid, tag)
    drained_by = time.monotonic() + DRAIN_SECONDS
    while reading and time.monotonic() < drained_by:
        reading = _read_some(fd, output)
    return stopped


def _read_some(fd: int, output: TaskOutput) -> bool:
    """Read what the pipe holds (waiting a moment for it); False at its end."""
    ready, _, _ = select.select([fd], [], [], POLL_SECONDS)
    if not ready:
        return True
    chunk = os.read(fd, CHUNK_BYTES)
    if chunk:
        output.write(chunk)
    return bool(chunk)


def _why_stop(limits: Limits, deadline: float, output: TaskOutput) -> Ended | None:
    """How the run ends if it must be stopped now. A request to cancel comes first: the
    task then ends as asked, even while the runner stops."""
    if limits.cancel.is_set():
        return Ended(None, "cancelled on request", Cause.CANCELLED)
    if limits.stop.is_set():
        return Ended(None, "interrupted: the runner was stopped", Cause.INTERRUPTED)
    if limits.lost.is_set():
        return Ended(None, "stopped: another runner holds the task now", Cause.LOST)
    if output.log_error is not None:
        return Ended(None, runner_error(output.log_error), Cause.RUNNER_ERROR)
    if time.monotonic() >= deadline:
        return Ended(None, f"timeout after {limits.timeout:g} s", Cause.TIMEOUT)
    return None


def _has_exited(pid: int) -> bool:
    """Whether the leader has exited, leaving it unreaped (so its group id stays taken)."""
    flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
    return os.waitid(os.P_PID, pid, flags) is not None


def _kill_all(pgid: int, tag: str) -> None:
    """SIGKILL the command's group, then what carries its tag outside the group."""
    _signal_group(pgid, signal.SIGKILL)
    kill_tagged(tag)


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass
