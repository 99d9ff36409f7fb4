"""Heartbeats: while a command runs, renew the task's lease and send what is new.

Every :func:`interval` seconds (a third of the lease, so two heartbeats may fail before
the lease runs out, and at most ``MAX_INTERVAL_SECONDS``, so that a request to cancel is
seen soon) a PATCH carries the ``runner_id``, the latest progress and the output printed
since the last PATCH the service took. Its answer is the task: ``cancel_requested`` there
sets :attr:`Heartbeat.cancel`, which stops the command (heartbeats go on while it stops).
``409`` means another runner holds the task now: :attr:`Heartbeat.lost` is set, which
stops the command, and nothing more is sent. Other failures are logged and the next
heartbeat tries again with all that is due.
"""
from __future__ import annotations

import logging
import threading
from types import TracebackType

from app.runner.api import ApiError, TaskApi
from app.runner.output import TaskOutput

log = logging.getLogger(__name__)

MAX_INTERVAL_SECONDS = 10.0
"""The longest time between heartbeats, whatever the lease: a request to cancel stops the
command within it (and the grace its group gets)."""


def interval(lease_seconds: float) -> float:
    """Seconds between the heartbeats of a task claimed for ``lease_seconds``."""
    return min(lease_seconds / 3, MAX_INTERVAL_SECONDS)


class Heartbeat:
    """A thread beating for one task, from ``with`` to its end."""

    def __init__(self, api: TaskApi, task_id: str, runner_id: str, *, lease_seconds: float,
                 output: TaskOutput, lost: threading.Event, cancel: threading.Event) -> None:
        self.api = api
        self.task_id = task_id
        self.runner_id = runner_id
        self.interval = interval(lease_seconds)
        self.output = output
        self.lost = lost
        self.cancel = cancel
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat_until_done,
                                        name=f"heartbeat-{task_id[:8]}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        """Stop, waiting for a heartbeat on its way: the final report must not send its
        output a second time."""
        self._done.set()
        self._thread.join()

    def _beat_until_done(self) -> None:
        while not self._done.wait(self.interval):
            fields, offset = self.output.update()
            try:
                task = self.api.heartbeat(self.task_id, {"runner_id": self.runner_id,
                                                         **fields})
            except ApiError as exc:
                log.warning("task %s: heartbeat not taken: %s", self.task_id, exc)
                continue
            if task is None:
                log.warning("task %s: another runner holds the task now (the lease was "
                            "lost); stopping its command, nothing will be reported",
                            self.task_id)
                self.lost.set()
                return
            self.output.sent(offset)
            if task.get("cancel_requested") is True and not self.cancel.is_set():
                log.info("task %s: cancel requested; stopping its command", self.task_id)
                self.cancel.set()
