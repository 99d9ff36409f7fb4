"""Claim, run, report: what each of the runner's worker threads does.

A worker claims a task only when it is free to run it, so runners sharing a queue split
it by who has room. Each worker claims under a ``runner_id`` of its own; a claim
repeated under the same id returns the task it holds, so a claim whose answer was lost
takes nothing more. A worker takes a new id after a report the service did not take:
the service still sees the old id holding that task, and would hand it back; and after a
task whose id cannot name a file, which it leaves alone (nothing run, nothing reported:
a report would have to name the task in its address).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.runner.api import ApiError, TaskApi
from app.runner.conventions import decision_prompt
from app.runner.execution import Cause, Ended, Limits, run_command, runner_error
from app.runner.folder import RunnerFolder, checked_task_id
from app.runner.heartbeat import Heartbeat
from app.runner.identity import new_runner_id
from app.runner.outcome import Outcome, judge
from app.runner.output import TaskOutput
from app.runner.reports import Reports
from app.runner.running import RunningCommands

log = logging.getLogger(__name__)

HIDDEN_FROM_COMMANDS = ("AGENT_API_TOKEN", "AGENT_DECISION")
"""The token stays with the runner; ``AGENT_DECISION`` is set per task."""


@dataclass(frozen=True)
class RunSettings:
    workdir: Path
    timeout: float
    lease_seconds: int
    log_max_bytes: int
    cancel_grace: float
    """Seconds a command's group has between SIGTERM and SIGKILL after a request to
    cancel."""
    allowed_programs: frozenset[str]
    executor: str
    """Who runs the tasks, named in each report that ends a task."""
    runner_id_prefix: str = ""
    """What the token asks each runner id to start with (see :mod:`app.runner.identity`)."""


class Runner:
    """Runs tasks on ``workers`` threads, each task's command a process."""

    def __init__(self, api: TaskApi, reports: Reports, folder: RunnerFolder,
                 commands: RunningCommands, settings: RunSettings, *, workers: int) -> None:
        self.api = api
        self.reports = reports
        self.folder = folder
        self.commands = commands
        self.settings = settings
        self.workers = workers
        self.stop = threading.Event()
        """Set to stop claiming and interrupt the commands that are running."""
        self.claims_failed = False
        """Whether a claim failed, or brought a task whose id cannot be used."""

    def run(self, *, once: bool, interval: float) -> None:
        """Claim and run tasks until none is pending (``once``) or until stopped."""
        threads = [threading.Thread(target=self._work, args=(number, once, interval),
                                    name=f"worker-{number}")
                   for number in range(1, self.workers + 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _work(self, number: int, once: bool, interval: float) -> None:
        prefix = self.settings.runner_id_prefix
        runner_id = new_runner_id(number, prefix)
        while not self.stop.is_set():
            try:
                task = self.api.claim(runner_id, self.settings.lease_seconds)
            except ApiError as exc:
                if once:
                    log.error("%s", exc)
                    self.claims_failed = True
                    return
                log.warning("%s; claiming again in %g s", exc, interval)
                self.stop.wait(interval)
                continue
            if task is None:
                if once:
                    return
                self.stop.wait(interval)
                continue
            try:
                checked_task_id(task.get("id"))
            except ValueError as exc:
                log.error("claimed a task that cannot be run here (%s); left alone", exc)
                self.claims_failed = True
                runner_id = new_runner_id(number, prefix)
                continue
            try:
                settled = self.handle(task, runner_id)
            except Exception:
                log.error("task %s: unexpected error while reporting", task.get("id"),
                          exc_info=True)
                settled = False
            if not settled:
                runner_id = new_runner_id(number, prefix)

    def handle(self, task: dict[str, Any], runner_id: str) -> bool:
        """Run a claimed task and report it; whether the report is settled (or there was
        nothing to report: the lease was lost)."""
        task_id = task["id"]
        log.info("started %s %s %s", task_id, task["task_type"], task["model"])
        output = TaskOutput()
        outcome = self._execute(task, runner_id, output)
        if outcome is None:
            return True
        log.info("finished %s %s %s %s in %.2f s", task_id, task["task_type"], task["model"],
                 outcome.status, outcome.duration_seconds)
        return self.reports.submit(task_id, outcome.report(
            runner_id, output.text(), output.rest(), executor=self.settings.executor))

    def _execute(self, task: dict[str, Any], runner_id: str,
                 output: TaskOutput) -> Outcome | None:
        """Run the command and judge how it went; None if the lease was lost. Whatever
        goes wrong in the runner meanwhile fails the task, with a note naming the error."""
        limits = Limits(self.settings.timeout, self.stop, lost=threading.Event(),
                        cancel=threading.Event(), cancel_grace=self.settings.cancel_grace)
        started = time.monotonic()
        finished: float | None = None  # before waiting for a heartbeat on its way
        try:
            output.open_log(self.folder.task_log(task["id"]), self.settings.log_max_bytes)
            log.debug("task %s: running %s", task["id"], task["command"])
            with (Heartbeat(self.api, task["id"], runner_id, output=output, lost=limits.lost,
                            cancel=limits.cancel, lease_seconds=self.settings.lease_seconds),
                  self.commands.recorded(task["id"]) as tag):
                ended = run_command(task["command"], output, workdir=self.settings.workdir,
                                    env=command_env(task.get("decision")), tag=tag,
                                    programs=self.settings.allowed_programs, limits=limits)
                finished = time.monotonic()
        except Exception as exc:  # whatever it is, the task ends failed, not running
            log.error("task %s: %s", task["id"], runner_error(exc), exc_info=True)
            ended = Ended(None, runner_error(exc), Cause.RUNNER_ERROR)
        duration = round((finished or time.monotonic()) - started, 6)
        output.end()
        if limits.lost.is_set():
            output.note(ended.note or "stopped: another runner holds the task now")
            output.close_log()
            return None
        prompt = decision_prompt(output.text()) if ended.exit_code is not None else None
        note = None if prompt else ended.note
        if note:
            output.note(note)
        output.close_log()
        if output.log_error is not None and note is None:
            log.error("task %s: %s", task["id"], runner_error(output.log_error))
            prompt, note = None, runner_error(output.log_error)
            output.note(note)
        ignored, problem = output.usage_ignored
        if ignored:
            log.warning("task %s: %d ::usage:: line(s) ignored, the first: %s", task["id"],
                        ignored, problem)
        return judge(ended, duration, prompt=prompt, failed=note is not None,
                     retry_after=output.retry_after, usage=output.usage)


def command_env(decision: str | None) -> dict[str, str]:
    """The runner's environment for a command, with the task's decision if it has one."""
    env = {name: value for name, value in os.environ.items()
           if name not in HIDDEN_FROM_COMMANDS}
    if decision is not None:
        env["AGENT_DECISION"] = decision
    return env
