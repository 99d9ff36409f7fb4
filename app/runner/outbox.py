"""The outbox: final reports on disk until the service has them.

One JSON file per task, ``<folder>/<task_id>.json``, written before the report is sent
and removed once it is delivered: a report survives the service being down, and the
runner being stopped or killed, and is sent again by the next runner started on the
folder. A file is written whole or not at all: into a temporary file in the same folder,
flushed and fsynced, renamed over the final name, and the folder fsynced so that the
rename itself survives a power loss.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from app.runner.folder import checked_task_id

log = logging.getLogger(__name__)

PARTIAL_PREFIX = "."
"""Temporary files start with a dot: they are never read as reports."""


class Outbox:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, task_id: str) -> Path:
        """``<task_id>.json``; ValueError for an id that is not a plain name."""
        return self.folder / f"{checked_task_id(task_id)}.json"

    def put(self, task_id: str, body: dict[str, Any]) -> None:
        """Save the report of ``task_id`` durably (OSError if it cannot be; ValueError for
        an id that is not a plain name)."""
        final = self.path(task_id)
        data = json.dumps({"task_id": task_id, "body": body}, ensure_ascii=False).encode()
        handle, temporary = tempfile.mkstemp(dir=self.folder, prefix=f"{PARTIAL_PREFIX}{task_id}.",
                                             suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, final)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        self._sync_folder()

    def remove(self, task_id: str) -> None:
        self.path(task_id).unlink(missing_ok=True)

    def reports(self) -> list[tuple[str, dict[str, Any]]]:
        """The reports waiting, oldest first, as (task id, body). A file that cannot be
        read is logged and left where it is."""
        found = []
        for path in self._files():
            try:
                saved = json.loads(path.read_bytes())
                found.append((checked_task_id(saved["task_id"]), dict(saved["body"])))
            except FileNotFoundError:
                continue  # delivered since the folder was listed
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("%s: not a report the runner can send (%s); left for the operator",
                          path, exc)
        return found

    def count(self) -> int:
        return len(self._files())

    def discard_partial(self) -> None:
        """Remove temporary files left by a runner killed while it wrote a report (that
        report was never sent: its task's lease runs out and it runs again)."""
        for path in self.folder.glob(f"{PARTIAL_PREFIX}*.tmp"):
            path.unlink(missing_ok=True)

    def _files(self) -> list[Path]:
        paths = []
        for path in self.folder.glob("*.json"):
            try:
                paths.append((path.stat().st_mtime_ns, path))
            except FileNotFoundError:
                continue  # delivered meanwhile
        return [path for _, path in sorted(paths)]

    def _sync_folder(self) -> None:
        folder = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
