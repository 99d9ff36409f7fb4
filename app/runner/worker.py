"""Claim, run, record, report: what the runner does with each pending task.

A task is claimed only when a worker thread is free to run it, so runners sharing a
queue split it by who has room. The metric is recorded here before the report is sent
(``record_task`` keeps one record per task, so the API's own recording of the same
report changes nothing) and therefore survives a report that does not get through.
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from app.clock import parse_iso
from app.runner.api import ApiError, TaskApi
from app.runner.execution import Outcome, run_command
from app.services import metrics_service

log = logging.getLogger(__name__)


def task_log_path(logs_dir: Path, task_id: str) -> Path:
    return logs_dir / f"task_{task_id}.log"


class Runner:
    """Runs tasks on a pool of ``workers`` threads, each task's command a process."""

    def __init__(
        self, api: TaskApi, *, logs_dir: Path, workdir: Path, timeout: float, workers: int
    ) -> None:
        self.api = api
        self.logs_dir = logs_dir
        self.workdir = workdir
        self.timeout = timeout
        self.stop = threading.Event()
        """Set to stop claiming and interrupt the commands that are running."""
        self.undelivered: list[str] = []
        """Ids of tasks whose report did not get through."""
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="task")
        self._queued: set[str] = set()
        self._guard = threading.Lock()

    def drain(self) -> None:
        """Run every task that is pending now, then return (``--once``).

        The cutoff is the creation time of the newest task pending at the start. Pages
        of the oldest pending tasks are then listed and run, leaving out tasks created
        after the cutoff and tasks already tried, until a page has none left: so however
        many are pending, and however many arrive meanwhile, each task pending at the
        start is tried once and nothing newer is.
        """
        newest = self.api.newest_pending()
        if newest is None:
            return
        cutoff = parse_iso(newest["created_at"])
        attempted: set[str] = set()
        while not self.stop.is_set():
            batch = [task for task in self.api.pending_tasks() if task["id"] not in attempted
                     and parse_iso(task["created_at"]) <= cutoff]
            if not batch:
                return
            attempted.update(task["id"] for task in batch)
            wait(self._enqueue(batch))

    def poll(self, interval: float) -> None:
        """List pending tasks every ``interval`` seconds and run them, until stopped.

        Each listing is of the oldest pending tasks, so a steady flow of new tasks
        cannot keep old ones waiting. If the very first listing fails, the ApiError is
        raised: the runner is probably pointed at the wrong place. Later failures are
        logged and listing goes on.
        """
        reached = False
        while not self.stop.is_set():
            try:
                tasks = self.api.pending_tasks()
            except ApiError as exc:
                if not reached:
                    raise
                log.warning("%s; listing again in %g s", exc, interval)
            else:
                reached = True
                self._enqueue(tasks)
            self.stop.wait(interval)

    def close(self) -> None:
        """Drop tasks not yet claimed and wait for the running ones to be reported."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _enqueue(self, tasks: list[dict[str, Any]]) -> list[Future[None]]:
        futures = []
        with self._guard:
            for task in tasks:
                if task["id"] not in self._queued:
                    self._queued.add(task["id"])
                    futures.append(self._pool.submit(self._handle_queued, task))
        return futures

    def _handle_queued(self, task: dict[str, Any]) -> None:
        try:
            self.handle(task)
        except Exception:
            log.exception("task %s: unexpected error", task.get("id"))
        finally:
            with self._guard:
                self._queued.discard(task["id"])

    def handle(self, listed: dict[str, Any]) -> None:
        """Claim a listed task, run its command, record its metric, report it."""
        task_id = listed["id"]
        if self.stop.is_set():
            return
        try:
            task = self.api.claim(task_id)
        except ApiError as exc:
            log.warning("task %s not claimed: %s", task_id, exc)
            return
        if task is None:
            log.debug("task %s: claimed by another runner, skipped", task_id)
            return
        log_path = task_log_path(self.logs_dir, task_id)
        log.info("started %s %s %s", task_id, task["task_type"], task["model"])
        log.debug("task %s: running %s, output in %s", task_id, task["command"], log_path)
        outcome = run_command(
            task["command"], log_path, workdir=self.workdir, timeout=self.timeout, stop=self.stop
        )
        log.info("finished %s %s %s %s in %.2f s", task_id, task["task_type"], task["model"],
                 outcome.status, outcome.duration_seconds)
        self._record(task, outcome)
        self._report(task_id, outcome, log_path)

    def _record(self, task: dict[str, Any], outcome: Outcome) -> None:
        try:
            metrics_service.record_task(
                task["id"], task["task_type"], task["model"],
                outcome.duration_seconds, outcome.status, logs_dir=self.logs_dir,
            )
        except (OSError, ValueError) as exc:
            log.error("task %s: metric not recorded: %s", task["id"], exc)

    def _report(self, task_id: str, outcome: Outcome, log_path: Path) -> None:
        try:
            self.api.report(task_id, outcome.status, outcome.output, outcome.duration_seconds)
        except ApiError as exc:
            log.error("task %s: report of status %s not delivered (%s); "
                      "left for the operator, output in %s",
                      task_id, outcome.status, exc, log_path)
            with self._guard:
                self.undelivered.append(task_id)
