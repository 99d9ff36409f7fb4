"""Heartbeats: while a command runs, renew the task's lease and send what is new.

Every ``interval`` seconds (a third of the lease, so two heartbeats may fail before the
lease runs out) a PATCH carries the ``runner_id``, the latest progress and the output
printed since the last PATCH the service took. ``409`` means another runner holds the
task now: :attr:`lost` is set, which stops the command, and nothing more is sent.
Other failures are logged and the next heartbeat tries again with all that is due.
"""
from __future__ import annotations

import logging
import threading
from types import TracebackType

from app.runner.api import ApiError, TaskApi
from app.runner.output import TaskOutput

log = logging.getLogger(__name__)


class Heartbeat:
    """A thread beating for one task, from ``with`` to its end."""

    def __init__(self, api: TaskApi, task_id: str, runner_id: str, *, interval: float,
                 output: TaskOutput, lost: threading.Event) -> None:
        self.api = api
        self.task_id = task_id
        self.runner_id = runner_id
        self.interval = interval
        self.output = output
        self.lost = lost
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
                renewed = self.api.heartbeat(self.task_id, {"runner_id": self.runner_id,
                                                            **fields})
            except ApiError as exc:
                log.warning("task %s: heartbeat not taken: %s", self.task_id, exc)
                continue
            if not renewed:
                log.warning("task %s: another runner holds the task now (the lease was "
                            "lost); stopping its command, nothing will be reported",
                            self.task_id)
                self.lost.set()
                return
            self.output.sent(offset)
