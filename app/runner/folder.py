"""The runner's own folder (``AGENT_RUNNER_DIR``): its log, the outbox, the task logs,
the records of the commands running.

Nothing the runner writes goes anywhere else: the service's stores are the service's. A
task's id names files here, so an id that is not one plain file name (``../x``, ``a/b``)
is never used: the runner leaves such a task alone.
"""
from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from app.shared_settings import ConfigError

SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
"""What a task id may be: the service's are 32 hexadecimal digits."""


def checked_task_id(task_id: object) -> str:
    """``task_id`` if it can name a file; ValueError otherwise."""
    if not isinstance(task_id, str) or not SAFE_ID.fullmatch(task_id):
        raise ValueError(f"not a task id: {str(task_id)[:40]!r}")
    return task_id


@dataclass(frozen=True)
class RunnerFolder:
    root: Path

    @property
    def log_file(self) -> Path:
        return self.root / "agent_runner.log"

    @property
    def outbox(self) -> Path:
        return self.root / "outbox"

    @property
    def task_logs(self) -> Path:
        return self.root / "task-logs"

    @property
    def running(self) -> Path:
        return self.root / "running"

    def task_log(self, task_id: str) -> Path:
        """``task-logs/task_<id>.log``; ValueError for an id that is not a plain name."""
        return self.task_logs / f"task_{checked_task_id(task_id)}.log"

    @classmethod
    def prepare(cls, root: Path) -> RunnerFolder:
        """Create the folder and its subfolders, and check that files can be written in
        each; :class:`ConfigError` naming ``AGENT_RUNNER_DIR`` if not."""
        folder = cls(root.resolve())
        for path in (folder.root, folder.outbox, folder.task_logs, folder.running):
            try:
                path.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryFile(dir=path):
                    pass
            except OSError as exc:
                raise ConfigError(f"AGENT_RUNNER_DIR: cannot write in {path}: "
                                  f"{exc.strerror or exc}") from exc
        return folder
