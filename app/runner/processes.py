"""Every process a command started, found and stopped wherever it went (Linux ``/proc``).

Each command runs with ``AGENT_RUNNER_TAG=<tag>`` in its environment, a tag of its own.
Whatever it starts inherits the variable, in its process group or not: a process that
left the group (``setsid``) still carries it, so the runner finds it in
``/proc/<pid>/environ`` and stops it with its command. A process that drops the variable
from its environment, or runs as another user, is out of this reach; while it stays in
the command's process group, the group's SIGKILL still ends it.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

TAG_VARIABLE = "AGENT_RUNNER_TAG"
PROC = Path("/proc")
MAX_ROUNDS = 20
"""Passes over ``/proc`` at most: each kills what the one before could not see yet (a
child forked meanwhile)."""


def start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot): with the pid, it names one
    process for good. None if there is no such process, or only its zombie."""
    try:
        fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
        state, started = fields[0], fields[19]
    except (OSError, IndexError):
        return None
    return None if state in {"Z", "X"} else started


def tagged(tag: str) -> list[int]:
    """The processes whose environment carries ``tag``."""
    entry = f"{TAG_VARIABLE}={tag}".encode()
    found = []
    for environ in PROC.glob("[0-9]*/environ"):
        try:
            if entry in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:  # gone meanwhile, or another user's
            continue
    return found


def kill_tagged(tag: str) -> int:
    """SIGKILL every process carrying ``tag`` until none is left; how many were killed."""
    seen: set[int] = set()
    killed = 0
    for _ in range(MAX_ROUNDS):
        found = set(tagged(tag)) - seen
        if not found:
            break
        seen |= found
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                continue
            killed += 1
    return killed
