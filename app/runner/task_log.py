"""Task logs in the runner's folder: one file per task, capped in size, kept for some days."""
from __future__ import annotations

import time
from pathlib import Path

from app.runner.tail import Tail

SECONDS_PER_DAY = 86_400


def left_out_line(count: int) -> bytes:
    return f"\n[... {count} bytes left out ...]\n".encode()


class CappedLog:
    """A log file of at most about ``max_bytes``: the whole output while it fits; beyond
    that, its first half and its last half with a line saying how much was left out.

    The first half is written as it comes. Past it, output is appended, and its end is
    also kept in memory (half of ``max_bytes``). Whenever the file grows beyond
    ``max_bytes``, what follows the first half is rewritten as the left-out line and the
    newest quarter of ``max_bytes``, leaving room for another quarter before the next
    rewrite: so the file never grows much beyond ``max_bytes``, each byte is written about
    twice however much a command prints, and the file shows the output so far while the
    command runs. :meth:`close` rewrites the end once more with the whole last half.
    """

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._head_limit = max_bytes // 2
        self._head = 0
        """Bytes of the first half written."""
        self._end = Tail(max_bytes - self._head_limit)
        """What came after the first half: its newest bytes."""
        self._end_in_file = 0
        """How many of those the file holds after the left-out line."""
        self._cut = False
        self._file = open(path, "wb")

    def write(self, data: bytes) -> None:
        if self._head < self._head_limit:
            part = data[:self._head_limit - self._head]
            self._put(part)
            self._head += len(part)
            data = data[len(part):]
        if not data:
            return
        self._end.append(data)
        self._put(data)
        self._end_in_file += len(data)
        if self._head + self._end_in_file > self.max_bytes:
            self._rewrite_end(self._end.limit // 2)

    def close(self) -> None:
        try:
            if self._cut:
                self._rewrite_end(self._end.limit)
        finally:
            self._file.close()

    def _put(self, data: bytes) -> None:
        self._file.write(data)
        self._file.flush()

    def _rewrite_end(self, keep: int) -> None:
        kept = self._end.since(self._end.end - keep)
        self._file.seek(self._head)
        self._file.truncate()
        self._put(left_out_line(self._end.end - len(kept)) + kept)
        self._end_in_file = len(kept)
        self._cut = True


def prune_task_logs(folder: Path, keep_days: int, now: float | None = None) -> int:
    """Delete the task logs last written more than ``keep_days`` days ago; how many."""
    cutoff = (time.time() if now is None else now) - keep_days * SECONDS_PER_DAY
    removed = 0
    for path in folder.glob("task_*.log"):
        try:
            if path.lstat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed
