"""Commands never outlive their runner, even one killed with SIGKILL.

While a command runs, its tag (see :mod:`app.runner.processes`) is a file in the
runner's folder, ``running/<tag>``, holding the task's id; the tag starts with the
runner's own name, its pid and start time. Two things stop what a runner leaves:

- its watchdog, a process forked when the runner starts, that reads a pipe only the
  runner holds open: the pipe ends when the runner does, however it ends, and the
  watchdog then stops the processes of every command its runner recorded, at once,
  before the task's lease can run out and another runner can start the task again;
- a runner starting on the folder, which first stops what the records of runners no
  longer alive name (should the watchdog have been killed too).
"""
from __future__ import annotations

import logging
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from app.runner.processes import kill_tagged, start_time

log = logging.getLogger(__name__)

TAG = re.compile(r"(?P<runner>(?P<pid>\d+)\.\d+)-[0-9a-f]{8}")


def this_runner() -> str:
    """This process's name among runners: ``<pid>.<start time>``."""
    return f"{os.getpid()}.{start_time(os.getpid())}"


def is_alive(runner: str) -> bool:
    pid, _, started = runner.partition(".")
    return start_time(int(pid)) == started


class RunningCommands:
    """The records of the commands running, in one folder (``running/``)."""

    def __init__(self, folder: Path, runner: str) -> None:
        self.folder = folder
        self.runner = runner

    @contextmanager
    def recorded(self, task_id: str) -> Iterator[str]:
        """A new tag, recorded until the command that carries it has ended."""
        tag = f"{self.runner}-{secrets.token_hex(4)}"
        path = self.folder / tag
        path.write_text(task_id)
        try:
            yield tag
        finally:
            path.unlink(missing_ok=True)

    def stop_left(self, runner: str | None = None) -> None:
        """Stop the processes of the commands that ``runner`` recorded, or (None) that
        runners no longer alive recorded, and forget those records."""
        for path in sorted(self.folder.iterdir()):
            tag = TAG.fullmatch(path.name)
            if tag is None or (tag["runner"] != runner if runner is not None
                               else is_alive(tag["runner"])):
                continue
            try:
                task_id = path.read_text()
            except FileNotFoundError:
                continue  # its command ended meanwhile
            killed = kill_tagged(path.name)
            log.warning("task %s: its runner (pid %s) is gone; stopped %d process(es) of "
                        "its command", task_id, tag["pid"], killed)
            path.unlink(missing_ok=True)


def start_watchdog(commands: RunningCommands) -> None:
    """Fork the watchdog of this runner's commands. To be called before any thread
    starts: a fork copies only the thread that calls it.

    The watchdog leaves the runner's session, so that what is sent to the runner's
    process group (Ctrl-C, a supervisor's SIGKILL) does not end it with the runner. The
    pipe's end the runner keeps is never inherited by commands (``close_fds``)."""
    read_end, write_end = os.pipe()
    if os.fork():
        os.close(read_end)
        return
    try:
        os.close(write_end)
        os.setsid()
        while os.read(read_end, 1):
            pass
        commands.stop_left(commands.runner)
    except BaseException:
        log.error("the watchdog of runner %s failed", commands.runner, exc_info=True)
    finally:
        os._exit(0)
