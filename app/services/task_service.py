"""Task lifecycle: create, list, get, claim, status transitions, cancel and rerun.

Task state lives in a :class:`~app.storage.stores.TaskStore`, never only in process
memory, so every worker, process and server sees the same tasks. A transition is read,
checked and written in one store transaction, which is what stops two runners from
claiming the same task; a final transition writes the task's metric record in the same
transaction.

A task's ``command`` is not stored: it is rendered from the routing when a task is
read, so a stored direction is never repeated in shell-quoted form. Fields that tasks
stored by earlier versions lack (``priority``, ``run_after``, ``max_attempts``) are
filled in when a task is read, in one place (``TaskService._shown``).

What a claim takes (priority, ``run_after``, the caps of :mod:`app.services.task_limits`)
and when a failure is retried (:mod:`app.services.task_retries`) have modules of their own.
"""
from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from app.clock import Clock, isoformat, utc_now
from app.models.agent import ENDED_STATUSES
from app.models.metrics import FINAL_STATUSES
from app.models.text import name_problem
from app.services.metrics_service import MetricsService
from app.services.record_fields import record_fields
from app.services.routing import Route, Routing
from app.services.task_leases import (
    DEFAULT_LEASE_SECONDS,
    attempt,
    elapsed_seconds,
    expiry,
    holder,
    lease,
    lease_expired,
    transition_lease,
)
from app.services.task_limits import next_claimable
from app.services.task_retries import (
    Retry,
    is_retried_by,
    last_error,
    may_retry,
    retry_change,
    retry_note,
)
from app.storage.stores import StoreUnavailable
from app.services.retention import cutoff
from app.storage.stores import CompactionReport
from app.storage.stores import Task, TaskStore, TaskTransaction

TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"running", "needs_decision", "completed", "failed", "cancelled"}),
    "running": frozenset({"needs_decision", "completed", "failed", "cancelled"}),
    "needs_decision": frozenset({"running", "completed", "failed", "cancelled"}),
    **{status: frozenset() for status in ENDED_STATUSES},
}
"""Which status may follow which. ``completed`` and ``failed`` record the task's metric;
``cancelled`` ends a task without one."""


REPORTED_STATUSES = (*ENDED_STATUSES, "needs_decision")
"""What a runner reports a task ended with; the same report twice changes nothing."""

log = logging.getLogger(__name__)


class TaskNotFound(LookupError):
    pass


class InvalidTask(ValueError):
    """A task that routing cannot run safely; ``field`` names the request field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class IllegalTransition(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class Progress:
    """What a change of a task may carry besides its status: the fields sent (not None)
    are stored; ``log_append`` is added to the task's log instead. ``usage`` and
    ``executor`` come with the report that ends the task, for its metric record."""

    output: str | None = None
    progress_pct: float | None = None
    current_step: str | None = None
    decision_prompt: str | None = None
    log_append: str | None = None
    usage: dict[str, Any] | None = None
    executor: str | None = None

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> Progress:
        """The progress a validated PATCH body carries."""
        return cls(**{field.name: body.get(field.name) for field in dataclasses.fields(cls)})

    def stored(self) -> dict[str, Any]:
        """The fields to store: those sent."""
        return {name: value for name, value in (
            ("output", self.output), ("progress_pct", self.progress_pct),
            ("current_step", self.current_step), ("decision_prompt", self.decision_prompt),
            ("usage", self.usage), ("executor", self.executor),
        ) if value is not None}


NO_PROGRESS = Progress()


class TaskService:
    def __init__(
        self,
        store: TaskStore,
        *,
        routing: Callable[[], Routing],
        metrics: MetricsService,
        clock: Clock = utc_now,
        max_attempts: int = 3,
    ) -> None:
        self.store = store
        self._routing = routing
        self.max_attempts = max_attempts
        self.metrics = metrics
        self.clock = clock

    def close_files(self) -> None:
        """Let go of the store's files or connections; the next call takes them again."""
        self.store.close()

    def compact(self, keep_days: int) -> CompactionReport:
        """Keep one state per task, dropping ended tasks (completed, failed, cancelled)
        whose ``updated_at`` is more than ``keep_days`` days ago; a task that has not
        ended, or whose metric record is not written yet, is always kept. The logs
        runners sent of dropped tasks go with them.
        """
        report, _ = self.store.compact(cutoff(self.clock(), keep_days))
        return report

    def route(self, task_type: str) -> Route:
        """The route of a task type (the routing file is read on first use)."""
        return self._routing().route(task_type)

    def _shown(self, state: Task) -> Task:
        """A stored task as the API shows it: the fields tasks stored before them lack
        filled in (``priority`` 0, no ``run_after``, the routing's ``max_attempts``)."""
        return {"priority": 0, "run_after": None, **state,
                "max_attempts": self._max_attempts(state)}

    def _max_attempts(self, task: Task) -> int:
        """How many times the task may be claimed: its own bound, else the default."""
        return task.get("max_attempts") or self._default_attempts(task["task_type"])

    def _default_attempts(self, task_type: str) -> int:
        """The routing entry's ``max_attempts``, else the service's."""
        return self.route(task_type).max_attempts or self.max_attempts

    def _with_command(self, state: Task) -> Task:
        """The whole task as the API shows it, with the command routing renders."""
        command = self.route(state["task_type"]).command_for(
            state["direction"], state["model"], state.get("decision"))
        return {**self._shown(state), "command": command}

    def create(
        self, direction: str, task_type: str, context: dict[str, Any], *, priority: int = 0,
        max_attempts: int | None = None, run_after: datetime | None = None,
        rerun_of: str | None = None, by: str | None = None,
    ) -> Task:
        """A new pending task, claimed by priority and not before ``run_after``. A
        ``model_override`` must be a model the routing knows; a direction the routed
        program could take for an option is refused. ``by``: the token name of who
        creates it, kept as ``created_by``."""
        routing = self._routing()
        route = routing.route(task_type)
        model = context.get("model_override") or route.model
        if model not in routing.models:
            raise InvalidTask("context", f"model_override {model[:200]!r} is not a model the "
                              "routing knows; add it to the routing file's \"models\".")
        if not route.direction_is_safe(direction):
            raise InvalidTask("direction", f"The command of {task_type} tasks cannot take a "
                              "direction starting with '-'.")
        now = isoformat(self.clock())
        task = {
            "id": uuid.uuid4().hex,
            "direction": direction,
            "task_type": task_type,
            "status": "pending",
            "model": model,
            "context": context,
            "output": None,
            "created_at": now,
            "updated_at": now,
            "started_at": None,
            "duration_seconds": None,
            "runner_id": None,
            "lease_expires_at": None,
            "attempts": 0,
            "priority": priority,
            "max_attempts": max_attempts or self._default_attempts(task_type),
            "run_after": None if run_after is None else isoformat(run_after),
            "rerun_of": rerun_of,
            "created_by": by,
        }
        self.store.insert(task)
        return self._with_command(task)

    def rerun(self, task_id: str, by: str | None = None) -> Task:
        """A new pending task doing again what an ended task did: the same direction,
        task type, context and priority."""
        task = self.get(task_id)
        if task["status"] not in ENDED_STATUSES:
            raise IllegalTransition(f"Task {task_id} is {task['status']}: only a task that "
                                    f"ended ({', '.join(ENDED_STATUSES)}) is run again.")
        return self.create(task["direction"], task["task_type"], task["context"],
                           priority=task["priority"], rerun_of=task_id, by=by)

    def _settle(self, task_id: str | None = None) -> None:
        """Apply what is due: lease expiries (of one task, or of every task), which send
        a task back to pending or, on its last attempt, give its runner a grace lease and
        then fail it (or cancel it, if a cancel was asked for); and the metric records of
        final tasks that lack one (a record that cannot be written yet is logged and left
        for the next call)."""
        if not self.store.has_due(self.clock(), task_id):
            return
        with self.store.transaction() as tx:
            now = self.clock()
            for task in tx.expired(now, task_id):
                self._expire(tx, task, now)
            try:
                for task in tx.unrecorded():
                    self._record(tx, task, now)
            except StoreUnavailable as exc:
                log.warning("metric records of finished tasks left for later: %s", exc)

    def _expire(self, tx: TaskTransaction, task: Task, now: datetime) -> Task:
        """Apply the expiry of the task's lease, within ``tx``; returns the task it leaves."""
        change = expiry(task, now, self._max_attempts(task))
        final = change.get("status") in FINAL_STATUSES
        if final:
            change["recorded"] = False
        tx.save(change)
        expired = {**task, **change}
        if final:
            self._record(tx, expired, now)
        return expired

    def _record(self, tx: TaskTransaction, task: Task, now: datetime) -> None:
        """Write a final task's metric record (its final state is written first, with
        ``recorded`` false, so a record that cannot be written yet is written later)."""
        prices = self._routing().prices.get(task["model"])
        tx.record(self.metrics.checked_record(task["id"], task["task_type"], task["model"],
                                              task["duration_seconds"], task["status"],
                                              record_fields(task, prices)))

    @staticmethod
    def _check_id(task_id: str) -> None:
        """Refuse a task id no task can have (too long, or holding a NUL, which
        PostgreSQL could not even look up) as an invalid request, on every backend."""
        problem = name_problem(task_id)
        if problem is not None:
            raise InvalidTask("task_id", problem)

    def _state(self, task_id: str) -> Task:
        self._check_id(task_id)
        self._settle(task_id)
        task = self.store.get(task_id)
        if task is None:
            raise TaskNotFound(f"Task {task_id} not found.")
        return task

    def get(self, task_id: str) -> Task:
        return self._with_command(self._state(task_id))

    def list_tasks(
        self,
        status: str | None = None,
        task_type: str | None = None,
        limit: int = 20,
        order: str = "newest",
        offset: int = 0,
    ) -> tuple[list[Task], int]:
        """Matching task states (no ``command``), newest (or oldest) first by
        ``created_at`` then ``id`` (a stable order to page through with ``offset``), at
        most ``limit``; and how many matched."""
        return self.find(None if status is None else (status,), task_type=task_type,
                         newest_first=order == "newest", limit=limit, offset=offset)

    def find(
        self,
        statuses: tuple[str, ...] | None,
        *,
        task_type: str | None = None,
        by: str = "created_at",
        newest_first: bool = True,
        limit: int | None = None,
        offset: int = 0,
    ) -> tuple[list[Task], int]:
        """Tasks (no ``command``) of these statuses (None: any), as of now, ordered by
        ``by`` (``created_at`` or ``updated_at``) then ``id``, at most ``limit`` (None:
        all of them); and how many matched."""
        self._settle()
        tasks, total = self.store.page(statuses, task_type, newest_first, limit, offset, by)
        return [self._shown(task) for task in tasks], total

    def counts_by_status(self) -> dict[str, int]:
        self._settle()
        return {**dict.fromkeys(TRANSITIONS, 0), **self.store.counts()}

    def claim(
        self,
        runner_id: str,
        task_types: list[str] | None = None,
        lease_seconds: int = DEFAULT_LEASE_SECONDS,
    ) -> Task | None:
        """Claim the next pending task (of ``task_types``) for ``runner_id`` under a
        lease: the highest priority, then the oldest, whose ``run_after`` has come and
        whose caps leave room; None if there is none. A runner that holds a task already
        gets that task again, so a claim repeated after a lost answer takes nothing more."""
        self._settle()
        with self.store.transaction() as tx:
            now = self.clock()
            held = tx.held_by(runner_id, now)
            if held is not None:
                return self._with_command(held)
            task = next_claimable(tx, self._routing(), task_types, now)
            if task is None:
                return None
            return self._write(tx, task, {"status": "running", **attempt(task, now),
                                          **lease(runner_id, lease_seconds, now)}, now)

    def _write(
        self, tx: TaskTransaction, task: Task, fields: dict[str, Any], now: datetime
    ) -> Task:
        """Save a change of ``task`` in ``tx`` and return the task it leaves."""
        change = {"id": task["id"], "updated_at": isoformat(now), **fields}
        if change.get("status") == "running" and task.get("started_at") is None:
            change["started_at"] = change["updated_at"]
        tx.save(change)
        return self._with_command({**task, **change})

    @contextmanager
    def _open(
        self, task_id: str, runner_id: str | None, held_only: bool = False
    ) -> Iterator[tuple[TaskTransaction, Task, datetime]]:
        """The task as of now, in a store transaction for one change: a lease that ran
        out is applied first; a runner's change of a task another runner holds is refused,
        and with ``held_only`` one of a task the runner does not hold (or held last, no
        one having claimed it since)."""
        self._check_id(task_id)
        self._settle(task_id)
        with self.store.transaction() as tx:
            now = self.clock()
            task = tx.get(task_id)
            if task is None:
                raise TaskNotFound(f"Task {task_id} not found.")
            if lease_expired(task, now):
                task = self._expire(tx, task, now)
            if runner_id is not None and holder(task, now) not in (None, runner_id):
                raise IllegalTransition(f"Task {task_id} is held by another runner.")
            if held_only and task.get("runner_id") != runner_id:
                raise IllegalTransition(f"Task {task_id} is not held by runner {runner_id}: "
                                        "a runner takes a task by claiming it.")
            yield tx, task, now

    def heartbeat(self, task_id: str, runner_id: str, progress: Progress = NO_PROGRESS, *,
                  held_only: bool = False) -> Task:
        """The runner holding the task renews its lease and sends its progress
        (``held_only``: see :meth:`_open`)."""
        with self._open(task_id, runner_id, held_only) as (tx, task, now):
            renewed = self._renew(tx, task, runner_id, progress, now)
            if renewed is None:
                raise IllegalTransition(f"Task {task_id} is not running under a lease of "
                                        f"runner {runner_id}.")
            return renewed

    def start(self, task_id: str, runner_id: str, progress: Progress = NO_PROGRESS, *,
              held_only: bool = False) -> Task:
        """A runner says it runs the task: a heartbeat if it holds the task; otherwise it
        takes the task under a new lease, as the transitions allow (unless
        ``held_only``: see :meth:`_open`)."""
        with self._open(task_id, runner_id, held_only) as (tx, task, now):
            renewed = self._renew(tx, task, runner_id, progress, now)
            if renewed is None:
                return self._move(tx, task, "running", progress, now, runner_id=runner_id)
            return renewed

    def report(
        self, task_id: str, runner_id: str, status: str, progress: Progress = NO_PROGRESS,
        duration_seconds: float | None = None, retry: Retry | None = None, *,
        held_only: bool = False,
    ) -> Task:
        """What the runner's run of the task ended with: an ended status (completed and
        failed record the task's metric) or needs_decision with its prompt. A failure
        with ``retry`` sends the task back to pending while attempts remain. The same
        report sent again, as after a lost answer, changes nothing. ``held_only``: see
        :meth:`_open`."""
        with self._open(task_id, runner_id, held_only) as (tx, task, now):
            if self._repeated(task, runner_id, status):
                return self._with_command(task)
            if status == "failed" and retry is not None and self._retries(task):
                return self._retry(tx, task, runner_id, retry, progress, now)
            return self._move(tx, task, status, progress, now, runner_id=runner_id,
                              duration_seconds=duration_seconds)

    @staticmethod
    def _repeated(task: Task, runner_id: str, status: str) -> bool:
        """Whether the runner's report is one the task has taken already."""
        if status == "failed" and is_retried_by(task, runner_id):
            return True
        return status == task["status"] in REPORTED_STATUSES and task.get(
            "runner_id") == runner_id

    def _retries(self, task: Task) -> bool:
        """Whether a failure of the task now is retried (else it ends failed)."""
        return "failed" in TRANSITIONS[task["status"]] and may_retry(
            task, self._max_attempts(task))

    def _retry(
        self, tx: TaskTransaction, task: Task, runner_id: str, retry: Retry,
        progress: Progress, now: datetime,
    ) -> Task:
        """Send the task back to pending after a failed attempt worth retrying; the
        attempt's output goes to the log (and its end to ``last_error``), not to
        ``output``. Its usage and executor are not kept: the task's record takes those
        of the report that ends it."""
        change = retry_change(task, self.route(task["task_type"]), retry, runner_id,
                              progress.output, now)
        note = retry_note(task.get("attempts", 0), self._max_attempts(task),
                          change["run_after"])
        logged = "".join(filter(None, (progress.log_append, progress.output, note)))
        return self._save(tx, task, change,
                          dataclasses.replace(progress, output=None, log_append=logged,
                                              usage=None, executor=None), now)

    def cancel(self, task_id: str, reason: str | None = None, by: str | None = None) -> Task:
        """A person (``by``, kept as ``cancelled_by``) cancels the task: a pending or
        needs_decision task ends cancelled at once; a running one is marked
        ``cancel_requested`` for its runner to stop (it sees that in the answer to its
        heartbeat, and reports cancelled)."""
        with self._open(task_id, None) as (tx, task, now):
            given = {"cancelled_by": by, **({} if reason is None else {"cancel_reason": reason})}
            if task["status"] == "running":
                return self._write(tx, task, {"cancel_requested": True, **given}, now)
            if task["status"] in ENDED_STATUSES:
                raise IllegalTransition(f"Task {task_id} is {task['status']} already.")
            return self._move(tx, task, "cancelled", NO_PROGRESS, now, fields=given)

    def transition(
        self, task_id: str, status: str, progress: Progress = NO_PROGRESS,
        duration_seconds: float | None = None,
    ) -> Task:
        """A person moves the task to ``status``, as the transitions allow; ``running``
        takes no lease then."""
        with self._open(task_id, None) as (tx, task, now):
            return self._move(tx, task, status, progress, now,
                              duration_seconds=duration_seconds)

    def edit(self, task_id: str, progress: Progress, priority: int | None = None) -> Task:
        """A person changes the progress fields of a task that has not ended, or the
        priority of a pending one."""
        with self._open(task_id, None) as (tx, task, now):
            if task["status"] in ENDED_STATUSES:
                raise IllegalTransition(f"Task {task_id} is {task['status']} already.")
            if priority is not None and task["status"] != "pending":
                raise IllegalTransition(f"Task {task_id} is {task['status']}: the priority "
                                        "of a pending task only may change.")
            return self._save(tx, task, {} if priority is None else {"priority": priority},
                              progress, now)

    def answer(
        self, task_id: str, decision: str, progress: Progress = NO_PROGRESS, *,
        status: str | None = None, runner_id: str | None = None, by: str | None = None,
    ) -> Task:
        """Answer a task that needs_decision: it goes back to pending, for a runner to run
        again with the decision. A ``status`` sent with the answer must be pending.
        ``by``: the token name of who answers, kept as ``decided_by``."""
        with self._open(task_id, runner_id) as (tx, task, now):
            if task["status"] != "needs_decision" or status not in (None, "pending"):
                raise IllegalTransition(f"Task {task_id} is {task['status']}: a decision "
                                        "answers a task that needs_decision, and sends it "
                                        "back to pending.")
            return self._write(tx, task, {**progress.stored(), "status": "pending",
                                          "decision": decision, "decided_by": by,
                                          "runner_id": None,
                                          "lease_expires_at": None}, now)

    def _renew(
        self, tx: TaskTransaction, task: Task, runner_id: str, progress: Progress,
        now: datetime,
    ) -> Task | None:
        """Renew the lease of ``runner_id`` if it holds the task, or if its lease ran out
        and no one has claimed the task since (the task runs again); None otherwise."""
        if task["status"] == "pending" and task.get("runner_id") == runner_id:
            change = {"status": "running", **lease(runner_id, task["lease_seconds"], now)}
        elif holder(task, now) == runner_id:
            change = lease(runner_id, task["lease_seconds"], now)
        else:
            return None
        return self._save(tx, task, change, progress, now)

    def _move(
        self, tx: TaskTransaction, task: Task, status: str, progress: Progress,
        now: datetime, *, runner_id: str | None = None, duration_seconds: float | None = None,
        fields: Mapping[str, Any] | None = None,
    ) -> Task:
        """Move the task to ``status`` as :data:`TRANSITIONS` allows, with ``fields``; a
        final status also records the task's metric, in the same transaction. A task
        someone asked to cancel ends cancelled rather than wait for a decision."""
        if status not in TRANSITIONS[task["status"]]:
            raise IllegalTransition(
                f"Task {task['id']} cannot go from {task['status']} to {status}.")
        if status == "needs_decision" and progress.decision_prompt is None:
            raise InvalidTask("decision_prompt",
                              "A task goes to needs_decision with a decision_prompt.")
        if status == "needs_decision" and task.get("cancel_requested"):
            status = "cancelled"
        change = {"status": status, **transition_lease(task, status, runner_id, now),
                  **(fields or {})}
        if status in ENDED_STATUSES:
            change.update(self._ending(task, status, progress, duration_seconds, now))
        changed = self._save(tx, task, change, progress, now)
        if status in FINAL_STATUSES:
            self._record(tx, changed, now)
        return changed

    @staticmethod
    def _ending(
        task: Task, status: str, progress: Progress, duration_seconds: float | None,
        now: datetime,
    ) -> dict[str, Any]:
        """The fields a task's end sets: its duration (the last attempt's, unless given),
        ``recorded`` false until its metric is written, and a failure's ``last_error``."""
        change: dict[str, Any] = {"duration_seconds": elapsed_seconds(task, now)
                                  if duration_seconds is None else duration_seconds}
        if status in FINAL_STATUSES:
            change["recorded"] = False
        if status == "failed" and progress.output is not None:
            change["last_error"] = last_error(progress.output)
        return change

    def _save(
        self, tx: TaskTransaction, task: Task, change: dict[str, Any], progress: Progress,
        now: datetime,
    ) -> Task:
        """Write ``change`` with the progress sent; its ``log_append`` goes to the log."""
        self._log_output(task["id"], progress.log_append)
        return self._write(tx, task, {**progress.stored(), **change}, now)

    def _log_output(self, task_id: str, text: str | None) -> None:
        if text:
            self.store.append_log(task_id, text)

    def task_log(self, task_id: str) -> dict[str, Any]:
        """What runners have sent of the task's output so far (the last MiB)."""
        task = self.get(task_id)
        return {"task_id": task_id, "log": self.store.read_log(task_id),
                "command": task["command"], "output": task["output"]}

    def log_tail(self, task_id: str, count: int) -> list[str]:
        """The last ``count`` lines runners sent of the task's output."""
        return self.store.read_log(task_id).splitlines()[-count:]
