"""Where a command's output goes as the runner reads it from the pipe.

Four places, each bounded: the task's log file (:class:`CappedLog`), the end of the
output for the final report, the part not yet sent to the service (heartbeats carry it
as ``log_append``), and what the output's lines said (``::progress::``,
``::retry-after::``, and what the task used: ``::usage::`` and result objects). The
reading thread writes; the heartbeat thread takes what is due; a lock keeps the two
apart.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from app.api_limits import MAX_LOG_APPEND_CHARS
from app.runner.conventions import MARK, RESULT_START, Progress, RetryAfter, parse_line
from app.runner.tail import Tail, complete_utf8, text_within
from app.runner.task_log import CappedLog, left_out_line
from app.runner.usage import Usage, UsageLine, UsageSeen

OUTPUT_LIMIT_BYTES = 64 * 1024
"""The end of the output a final report carries."""
LOG_APPEND_LIMIT_BYTES = MAX_LOG_APPEND_CHARS
"""The most output one PATCH carries; the newest part when more is due. Counted in bytes
of UTF-8, so never more characters than the service takes."""
LEFT_OUT_ROOM = 64
"""Room kept in ``LOG_APPEND_LIMIT_BYTES`` for the line saying what was left out."""
MAX_LINE_BYTES = 4096
"""Longer lines tell the runner nothing, so no more of a line is kept to look at..."""
MAX_RESULT_LINE_BYTES = 1024 * 1024
"""...but for one that may be a result object, which holds the command's final answer
before its usage."""


class TaskOutput:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._log: CappedLog | None = None
        self.log_error: OSError | None = None
        """Why the log could not be written, once it could not (it is then dropped)."""
        self._reported = Tail(OUTPUT_LIMIT_BYTES)
        self._unsent = Tail(LOG_APPEND_LIMIT_BYTES - LEFT_OUT_ROOM)
        self._sent_upto = 0
        self._line = bytearray()
        self._progress: Progress | None = None
        self._retry_after: RetryAfter | None = None
        self._usage = UsageSeen()
        self._ends_line = True

    def open_log(self, path: Path, max_bytes: int) -> None:
        """Start the log file (OSError if it cannot be created)."""
        self._log = CappedLog(path, max_bytes)

    def write(self, data: bytes) -> None:
        """Take a chunk of output. A log file that cannot be written is dropped, and the
        error kept in :attr:`log_error`; the output still goes everywhere else."""
        with self._lock:
            self._reported.append(data)
            self._unsent.append(data)
            self._scan_lines(data)
            self._ends_line = data.endswith(b"\n")
            if self._log is not None:
                try:
                    self._log.write(data)
                except OSError as exc:
                    self._drop_log(exc)

    def note(self, text: str) -> None:
        """Add ``[text]`` on a line of its own at the end of the output."""
        self.write(("" if self._ends_line else "\n").encode() + f"[{text}]\n".encode())

    def close_log(self) -> None:
        with self._lock:
            if self._log is not None:
                try:
                    self._log.close()
                except OSError as exc:
                    self.log_error = self.log_error or exc
                self._log = None

    @property
    def retry_after(self) -> float | None:
        """The seconds of the last ``::retry-after::`` line, if there was one."""
        with self._lock:
            return None if self._retry_after is None else self._retry_after.seconds

    @property
    def usage(self) -> Usage:
        """What the output said the task used (see :mod:`app.runner.usage`)."""
        with self._lock:
            return self._usage.usage()

    @property
    def usage_ignored(self) -> tuple[int, str | None]:
        """How many ``::usage::`` lines could not be used, and why the first could not."""
        with self._lock:
            return self._usage.ignored, self._usage.problem

    def end(self) -> None:
        """The command's output has ended: its last line counts without a newline too,
        and so does the whole output as one result object, when it was kept whole (the
        runner's notes come after)."""
        with self._lock:
            self._scan_line(bytes(self._line))
            self._line.clear()
            if self._reported.start == 0:
                self._usage.take_result(self._reported.since().decode("utf-8", "replace"))

    def text(self) -> str:
        """The end of the output: at most ``OUTPUT_LIMIT_BYTES`` of UTF-8."""
        with self._lock:
            return text_within(self._reported.since(), OUTPUT_LIMIT_BYTES)

    def update(self) -> tuple[dict[str, Any], int]:
        """The fields a heartbeat should carry now (latest progress, ``log_append``), and
        the offset to pass to :meth:`sent` once the service has them. A character still
        being read is left for the next time."""
        with self._lock:
            fields: dict[str, Any] = {}
            if self._progress is not None:
                fields["progress_pct"] = self._progress.pct
                if self._progress.step:
                    fields["current_step"] = self._progress.step
            text, offset = self._unsent_text(final=False)
            if text:
                fields["log_append"] = text
            return fields, offset

    def rest(self) -> str:
        """What the service has not been sent yet, once the output has ended."""
        with self._lock:
            return self._unsent_text(final=True)[0]

    def _unsent_text(self, *, final: bool) -> tuple[str, int]:
        """The newest output not yet sent, within ``LOG_APPEND_LIMIT_BYTES``, after a line
        saying how much was left out if more was due; and the offset it ends at."""
        due = self._unsent.since(self._sent_upto)
        if not final:
            due = due[:complete_utf8(due)]
        left_out = max(self._unsent.start - self._sent_upto, 0)
        text = text_within(due, self._unsent.limit)
        if left_out:
            text = left_out_line(left_out).decode() + text
        return text, max(self._sent_upto, self._unsent.start) + len(due)

    def sent(self, offset: int) -> None:
        """The service has the output up to ``offset``."""
        with self._lock:
            self._sent_upto = max(self._sent_upto, offset)

    def _drop_log(self, exc: OSError) -> None:
        self.log_error = exc
        log, self._log = self._log, None
        try:
            if log is not None:
                log.close()
        except OSError:
            pass  # the error that matters is the first one, kept above

    def _scan_lines(self, data: bytes) -> None:
        *complete, rest = data.split(b"\n")
        for part in complete:
            line = bytes(self._line + part)
            self._line.clear()
            self._scan_line(line)
        limit = (MAX_RESULT_LINE_BYTES if (self._line or rest).startswith(RESULT_START)
                 else MAX_LINE_BYTES)
        if len(self._line) + len(rest) <= limit:
            self._line += rest
        else:
            self._line[:] = b"\0"  # tells nothing, whatever follows

    def _scan_line(self, line: bytes) -> None:
        if line.startswith(MARK):
            said = parse_line(line.decode("utf-8", "replace"))
            if isinstance(said, Progress):
                self._progress = said
            elif isinstance(said, RetryAfter):
                self._retry_after = said
            elif isinstance(said, UsageLine):
                self._usage.take_line(said)
        elif line.startswith(RESULT_START):
            self._usage.take_result(line.decode("utf-8", "replace"))
