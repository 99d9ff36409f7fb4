"""What runners have sent of each task's output, so an operator can follow a task that
runs on another machine: one file per task in a folder beside the stores, holding at
most the last ``max_bytes`` (older output is cut from the front).

Appends to one task's file hold an ``flock`` on it, so writers in several processes
never interleave or cut each other's text.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import re
from pathlib import Path

from app.storage.stores import MAX_LOG_BYTES, StoreUnavailable

SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


class TaskLogs:
    def __init__(self, folder: str | os.PathLike[str], max_bytes: int = MAX_LOG_BYTES) -> None:
        self.folder = Path(folder)
        self.max_bytes = max_bytes

    def _path(self, task_id: str) -> Path:
        """The task's file; an id that is not a safe file name (a task line written by
        hand may hold any id) is named by its hash instead."""
        name = task_id if SAFE_ID.match(task_id) else hashlib.sha256(
            task_id.encode("utf-8", "surrogatepass")).hexdigest()
        return self.folder / f"{name}.log"

    def append(self, task_id: str, text: str) -> None:
        """Add ``text`` to the task's log, keeping the last ``max_bytes``."""
        data = text.encode("utf-8", "replace")
        if not data:
            return
        path = self._path(task_id)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(path, "a+b") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                handle.write(data)
                handle.flush()
                size = handle.seek(0, os.SEEK_END)
                if size > self.max_bytes:
                    handle.seek(size - self.max_bytes)
                    kept = handle.read()
                    handle.truncate(0)
                    handle.write(kept)
        except OSError as exc:
            raise StoreUnavailable(f"cannot write {path}: {exc.strerror or exc}") from exc

    def read(self, task_id: str) -> str:
        """The task's log so far ('' if nothing was sent); a character cut in two by the
        front trim is dropped."""
        try:
            data = self._path(task_id).read_bytes()
        except FileNotFoundError:
            return ""
        return data.decode("utf-8", "ignore")

    def remove(self, task_ids: set[str]) -> None:
        """Forget the logs of these tasks (their tasks were compacted away)."""
        for task_id in task_ids:
            try:
                self._path(task_id).unlink()
            except FileNotFoundError:
                pass
