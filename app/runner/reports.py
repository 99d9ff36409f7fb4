"""Delivering final reports, through the outbox, until the service has them.

A report is saved in the outbox, then sent at once. One the service did not take (it is
down, or answered 5xx) stays in the outbox and is sent again by a background thread,
after 1 s, then twice as long each time up to a minute, for as long as the runner runs;
a runner started later sends what its folder's outbox holds before it claims anything.
A report the service can never take (:class:`ReportRefused`) is dropped with an error
naming the task. The service records each task's metric from its final report, so
nothing measured is lost while the service is down.
"""
from __future__ import annotations

import enum
import logging
import threading
import time
from typing import Any

from app.runner.api import ApiError, ApiUnreachable, ReportRefused, TaskApi
from app.runner.outbox import Outbox

log = logging.getLogger(__name__)

FIRST_DELAY_SECONDS = 1.0
MAX_DELAY_SECONDS = 60.0


class Sent(enum.Enum):
    SETTLED = "delivered, or refused for good and dropped"
    KEPT = "to be sent again"
    UNREACHABLE = "to be sent again; the service did not answer"
    BUSY = "being sent already"


class Reports:
    def __init__(self, api: TaskApi, outbox: Outbox) -> None:
        self.api = api
        self.outbox = outbox
        self.dropped = 0
        """Reports the service refused for good (or that could not be kept to send)."""
        self._lock = threading.Lock()
        self._sending: set[str] = set()
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._retry_until_closed, name="outbox",
                                        daemon=True)

    def submit(self, task_id: str, body: dict[str, Any]) -> bool:
        """Save a report and send it; whether it is settled (delivered, or dropped).

        The report is marked as being sent before it is saved, so that the background
        thread, which may find it in the outbox meanwhile, leaves it to this call: the
        worker learns whether its own report got through."""
        with self._lock:
            self._sending.add(task_id)
        try:
            try:
                self.outbox.put(task_id, body)
            except (OSError, ValueError) as exc:
                log.error("task %s: report not saved in the outbox (%s); sending it anyway",
                          task_id, exc)
                if self._deliver(task_id, body, saved=False) is Sent.SETTLED:
                    return True
                self._count_dropped()
                return False
            settled = self._deliver(task_id, body) is Sent.SETTLED
        finally:
            self._sent(task_id)
        if settled and self.outbox.count():
            self._wake.set()  # the service answers again: no need to wait for the rest
        return settled

    def replay(self) -> None:
        """Send what the outbox holds (at start, before claiming)."""
        self._send_waiting()

    def start(self) -> None:
        """Keep sending what the outbox holds, in the background, until :meth:`close`."""
        self._thread.start()

    def close(self) -> None:
        """Stop sending in the background. A send on its way may finish: sending twice is
        safe, and what is not delivered stays in the outbox."""
        self._closing.set()
        self._wake.set()

    def drain(self, seconds: float) -> int:
        """Send what the outbox holds, again and again for up to ``seconds``; how many
        reports are left."""
        give_up = time.monotonic() + seconds
        delay = FIRST_DELAY_SECONDS
        while not self._send_waiting():
            left = give_up - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(delay, left))
            delay = min(delay * 2, MAX_DELAY_SECONDS)
        return self.waiting()

    def waiting(self) -> int:
        return self.outbox.count()

    def _retry_until_closed(self) -> None:
        """Passes over the outbox, ``delay`` apart. The delay doubles while reports stay,
        and starts again from 1 s once all are settled, or when a fresh report got
        through (the service answers again)."""
        delay = FIRST_DELAY_SECONDS
        while True:
            woken = self._wake.wait(delay)
            self._wake.clear()
            if self._closing.is_set():
                return
            settled = self._send_waiting(until=self._closing)
            if settled or woken:
                delay = FIRST_DELAY_SECONDS
            else:
                delay = min(delay * 2, MAX_DELAY_SECONDS)

    def _send_waiting(self, until: threading.Event | None = None) -> bool:
        """One pass over the outbox, oldest first (ended early once ``until`` is set);
        whether everything in it is settled. An unreachable service ends the pass too:
        the rest would fail the same way."""
        for task_id, body in self.outbox.reports():
            if until is not None and until.is_set():
                return False
            if not self.outbox.path(task_id).exists():
                continue  # settled meanwhile by the worker that wrote it
            if self._send(task_id, body) is Sent.UNREACHABLE:
                return False
        return self.outbox.count() == 0

    def _send(self, task_id: str, body: dict[str, Any]) -> Sent:
        """Send a report of the outbox, unless it is being sent already."""
        with self._lock:
            if task_id in self._sending:
                return Sent.BUSY
            self._sending.add(task_id)
        try:
            return self._deliver(task_id, body)
        finally:
            self._sent(task_id)

    def _sent(self, task_id: str) -> None:
        with self._lock:
            self._sending.discard(task_id)

    def _deliver(self, task_id: str, body: dict[str, Any], *, saved: bool = True) -> Sent:
        """Send one report; once settled, it leaves the outbox."""
        try:
            self.api.report(task_id, body)
        except ReportRefused as exc:
            log.error("task %s: report of status %s can never be applied (%s); dropped",
                      task_id, body.get("status"), exc)
            self._count_dropped()
        except ApiError as exc:
            if saved:
                log.warning("task %s: report of status %s not delivered yet (%s); kept in "
                            "%s", task_id, body.get("status"), exc, self.outbox.path(task_id))
            else:
                log.error("task %s: report of status %s not delivered (%s)",
                          task_id, body.get("status"), exc)
            return Sent.UNREACHABLE if isinstance(exc, ApiUnreachable) else Sent.KEPT
        if saved:
            try:
                self.outbox.remove(task_id)
            except OSError as exc:
                log.error("task %s: report settled, but %s", task_id, exc)
        return Sent.SETTLED

    def _count_dropped(self) -> None:
        with self._lock:
            self.dropped += 1
