"""Task lifecycle: create, list, get, and status transitions.

Task state lives in the task log, never only in process memory, so every worker and
every process sees the same tasks. A task's first line holds the whole task; each state
change appends a line with the task's id and only the fields that changed, laid over
what came before (lines of earlier versions, which repeat the whole task, read the
same). So a stored task costs about its direction and context once, whatever its
history. Each process replays what was appended since its last read. A transition is
read, checked and written under the log's lock, which is what stops two runners from
claiming the same task.

A task's ``command`` is not stored: it is rendered from the routing when a task is
read, so a stored direction is never repeated in shell-quoted form.
"""
from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from app.clock import Clock, isoformat, parse_iso, utc_now
from app.models.agent import TASK_TYPES
from app.models.metrics import FINAL_STATUSES
from app.services.metrics_service import MetricsService
from app.services.retention import CompactionReport, compact, cutoff
from app.services.routing import Route, Routing
from app.services.task_leases import (
    DEFAULT_LEASE_SECONDS,
    elapsed_seconds,
    expiry,
    holder,
    lease,
    lease_expired,
)
from app.storage import JsonlLog, StoreUnavailable
from app.storage.task_logs import TaskLogs

TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"running", "needs_decision", "completed", "failed"}),
    "running": frozenset({"needs_decision", "completed", "failed"}),
    "needs_decision": frozenset({"running", "completed", "failed"}),
    "completed": frozenset(),
    "failed": frozenset(),
}


REPORTED_STATUSES = (*FINAL_STATUSES, "needs_decision")
"""What a runner reports a task ended with; the same report twice changes nothing."""

log = logging.getLogger(__name__)


TEXT_FIELDS = ("id", "direction", "task_type", "model")
TIME_FIELDS = ("created_at", "updated_at")
UNSTORED_FIELDS = ("command",)
"""Fields that lines of earlier versions stored and that are now derived when read."""


def _is_time(value: Any) -> bool:
    try:
        parse_iso(value)
    except (TypeError, ValueError):
        return False
    return True


def is_task_state(state: dict[str, Any]) -> bool:
    """Whether a stored line is a task state the service can use (a line written by
    hand or damaged may lack fields, or hold values, that listing, transitions and
    metric records rely on)."""
    return (
        state.get("status") in TRANSITIONS
        and state.get("task_type") in TASK_TYPES
        and all(isinstance(state.get(name), str) and state[name] for name in TEXT_FIELDS)
        and all(_is_time(state.get(name)) for name in TIME_FIELDS)
        and (state.get("started_at") is None or _is_time(state["started_at"]))
        and isinstance(state.get("context"), dict)
    )


def merged_state(
    latest: dict[str, dict[str, Any]], line: dict[str, Any]
) -> dict[str, Any] | None:
    """The task state a stored line leaves: the line laid over the task's state so far.
    None if the result is not a usable task state (the line is then skipped)."""
    task_id = line.get("id")
    previous = latest.get(task_id) if isinstance(task_id, str) else None
    state = {**previous, **line} if previous is not None else dict(line)
    for name in UNSTORED_FIELDS:
        state.pop(name, None)
    return state if is_task_state(state) else None


def _mark(ids: set[str], task_id: str, member: bool) -> None:
    if member:
        ids.add(task_id)
    else:
        ids.discard(task_id)


class TaskNotFound(LookupError):
    pass


class InvalidTask(ValueError):
    """A task that routing cannot run safely; ``field`` names the request field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class IllegalTransition(ValueError):
    pass


class TaskService:
    def __init__(
        self,
        path: str | Path,
        *,
        routing: Callable[[], Routing],
        metrics: MetricsService,
        clock: Clock = utc_now,
        fsync: bool = True,
        max_attempts: int = 3,
    ) -> None:
        self.log = JsonlLog(path, fsync=fsync)
        self.task_logs = TaskLogs(Path(path).with_name("task-logs"))
        self._routing = routing
        self.max_attempts = max_attempts
        self.metrics = metrics
        self.clock = clock
        self._reader = self.log.reader()
        self._guard = threading.RLock()
        self._tasks: dict[str, dict[str, Any]] = {}
        self._unrecorded: set[str] = set()
        """Final tasks whose metric record is not known to be written yet."""
        self._leased: set[str] = set()
        """Running tasks under a lease: the only ones whose lease can expire, so reads
        look for due expiries among them, not among every task."""

    def close_files(self) -> None:
        """Close the store's file; the next call reopens it and goes on where it was."""
        with self._guard:
            self._reader.close()

    def refresh(self) -> None:
        """Replay what was appended since the last read: the latest state per task."""
        with self._guard:
            for batch in self._reader.poll():
                if batch.reset:
                    self._tasks, self._unrecorded, self._leased = {}, set(), set()
                for _, line in batch.records:
                    state = merged_state(self._tasks, line)
                    if state is None:
                        continue
                    self._tasks[state["id"]] = state
                    _mark(self._unrecorded, state["id"], state.get("recorded") is False)
                    _mark(self._leased, state["id"], state["status"] == "running"
                          and state.get("lease_expires_at") is not None)

    def compact(self, keep_days: int) -> CompactionReport:
        """Rewrite the store as one line per task: its latest state.

        A final task whose ``updated_at`` is more than ``keep_days`` days ago is dropped;
        a task not yet final, or whose metric record is not written yet, is always kept.
        Lines that are not task states, and final
        tasks whose ``updated_at`` does not parse, are dropped and counted as invalid.
        The logs runners sent of dropped tasks go with them.
        """
        oldest = cutoff(self.clock(), keep_days)

        def keep(
            lines: Iterator[dict[str, Any]], report: CompactionReport
        ) -> Iterator[dict[str, Any]]:
            latest: dict[str, dict[str, Any]] = {}
            for line in lines:
                state = merged_state(latest, line)
                if state is None:
                    report.invalid += 1
                    continue
                report.superseded += state["id"] in latest
                latest[state["id"]] = state
            for state in latest.values():
                if state["status"] not in FINAL_STATUSES or state.get("recorded") is False:
                    report.kept += 1
                    yield state
                    continue
                try:
                    updated = parse_iso(state.get("updated_at"))
                except (TypeError, ValueError):
                    report.invalid += 1
                    continue
                if updated < oldest:
                    report.expired += 1
                    dropped.add(state["id"])
                else:
                    report.kept += 1
                    yield state

        dropped: set[str] = set()
        report = compact(self.log, keep)
        self.task_logs.remove(dropped)
        return report

    def route(self, task_type: str) -> Route:
        """The route of a task type (the routing file is read on first use)."""
        return self._routing().route(task_type)

    def _with_command(self, state: dict[str, Any]) -> dict[str, Any]:
        """The task as the API shows it: its state and the command routing renders."""
        command = self.route(state["task_type"]).command_for(
            state["direction"], state["model"], state.get("decision"))
        return {**state, "command": command}

    def create(self, direction: str, task_type: str, context: dict[str, Any]) -> dict[str, Any]:
        """A new pending task. A ``model_override`` must be a model the routing knows;
        a direction the routed program could take for an option is refused."""
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
        }
        self.log.append([task])
        return self._with_command(task)

    def _due(self, task_id: str | None) -> list[dict[str, Any]]:
        now = self.clock()
        leased = self._leased if task_id is None else self._leased & {task_id}
        return [self._tasks[leased_id] for leased_id in sorted(leased)
                if lease_expired(self._tasks[leased_id], now)]

    def _settle(self, task_id: str | None = None) -> None:
        """Apply what is due: lease expiries (of one task, or of every task), which send
        a task back to pending or, after its last attempt, fail it; and the metric
        records of final tasks that lack one."""
        with self._guard:
            self.refresh()
            if not self._due(task_id) and not self._unrecorded:
                return
            with self.log.locked():
                self.refresh()
                now = self.clock()
                changes = [expiry(task, now, self.max_attempts) for task in self._due(task_id)]
                for change in changes:
                    if change["status"] in FINAL_STATUSES:
                        change["recorded"] = False
                self.log.append(changes)
                self.refresh()
                self._record_finished(raise_errors=False)

    def _record_finished(self, *, raise_errors: bool) -> None:
        """Write the metric record of each final task marked unrecorded, then mark it
        recorded. Under the lock. The task's final state is written first and is the
        source of truth: whatever stops the record from being written (a full disk, a
        killed process), the next call writes it from the task, so the two never
        disagree. Without ``raise_errors`` a record that cannot be written yet is
        logged and left for the next call."""
        marked = []
        try:
            for task_id in sorted(self._unrecorded):
                task = self._tasks[task_id]
                self.metrics.record_task(task_id, task["task_type"], task["model"],
                                         task["duration_seconds"], task["status"])
                marked.append({"id": task_id, "recorded": True})
        except StoreUnavailable as exc:
            if raise_errors:
                raise
            log.warning("metric records of finished tasks left for later: %s", exc)
        finally:
            self.log.append(marked)
            self.refresh()

    def _state(self, task_id: str) -> dict[str, Any]:
        with self._guard:
            self._settle(task_id)
            task = self._tasks.get(task_id)
        if task is None:
            raise TaskNotFound(f"Task {task_id} not found.")
        return task

    def get(self, task_id: str) -> dict[str, Any]:
        return self._with_command(self._state(task_id))

    def list_tasks(
        self,
        status: str | None = None,
        task_type: str | None = None,
        limit: int = 20,
        order: str = "newest",
        offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        """Matching task states (no ``command``), newest (or oldest) first by
        ``created_at`` then ``id`` (a stable order to page through with ``offset``), at
        most ``limit``; and how many matched."""
        with self._guard:
            self._settle()
            matches = [
                task for task in self._tasks.values()
                if (status is None or task["status"] == status)
                and (task_type is None or task["task_type"] == task_type)
            ]
        matches.sort(key=self._claim_order, reverse=order == "newest")
        return matches[offset:offset + limit], len(matches)

    def states(self) -> list[dict[str, Any]]:
        """Every task's current state (no ``command``), as of now."""
        with self._guard:
            self._settle()
            return list(self._tasks.values())

    def counts_by_status(self) -> dict[str, int]:
        with self._guard:
            self._settle()
            counts = dict.fromkeys(TRANSITIONS, 0)
            for task in self._tasks.values():
                counts[task["status"]] += 1
        return counts

    def claim(
        self,
        runner_id: str,
        task_types: list[str] | None = None,
        lease_seconds: int = DEFAULT_LEASE_SECONDS,
    ) -> dict[str, Any] | None:
        """Claim the oldest pending task (of ``task_types``) for ``runner_id`` under a
        lease; None if none is pending. A runner that holds a task already gets that task
        again, so a claim repeated after a lost answer takes nothing more."""
        with self._guard, self.log.locked():
            self._settle()
            now = self.clock()
            order = self._claim_order
            leased = (self._tasks[task_id] for task_id in self._leased)
            held = sorted((task for task in leased if holder(task, now) == runner_id),
                          key=order)
            if held:
                return self._with_command(held[0])
            pending = [task for task in self._tasks.values() if task["status"] == "pending"
                       and (not task_types or task["task_type"] in task_types)]
            if not pending:
                return None
            oldest = min(pending, key=order)
            return self._write(oldest, {"status": "running",
                                        "attempts": oldest.get("attempts", 0) + 1,
                                        **lease(runner_id, lease_seconds, now)}, now)

    @staticmethod
    def _claim_order(task: dict[str, Any]) -> tuple[str, str]:
        return task["created_at"], task["id"]

    def _write(
        self, task: dict[str, Any], fields: dict[str, Any], now: datetime
    ) -> dict[str, Any]:
        """Append a change of ``task`` (under the lock) and return the task it leaves."""
        change = {"id": task["id"], "updated_at": isoformat(now), **fields}
        if change.get("status") == "running" and task.get("started_at") is None:
            change["started_at"] = change["updated_at"]
        self.log.append([change])
        self.refresh()
        return self._with_command({**task, **change})

    def update(
        self,
        task_id: str,
        status: str | None = None,
        *,
        runner_id: str | None = None,
        output: str | None = None,
        duration_seconds: float | None = None,
        progress_pct: float | None = None,
        current_step: str | None = None,
        decision_prompt: str | None = None,
        decision: str | None = None,
        log_append: str | None = None,
    ) -> dict[str, Any]:
        """Change a task as a PATCH asks; a final status also records its metric.

        With ``runner_id``: a task another runner holds under a live lease is refused;
        the runner holding it renews its lease (no ``status``, or ``running``), also
        after the lease ran out if no one has claimed the task since; a claim
        (``running``) takes a lease; the same report sent again changes nothing.
        Without it (a person), transitions follow the table alone, and ``running``
        takes no lease. Without ``status``, the other fields update a task not yet
        final. ``decision`` answers a task that ``needs_decision``: it goes back to
        ``pending`` for a runner to run again with the decision.
        """
        with self._guard, self.log.locked():
            task = self._state(task_id)
            now = self.clock()
            held_by = holder(task, now)
            if runner_id is not None and held_by not in (None, runner_id):
                raise IllegalTransition(f"Task {task_id} is held by another runner.")
            fields = {name: value for name, value in (
                ("output", output), ("progress_pct", progress_pct),
                ("current_step", current_step), ("decision_prompt", decision_prompt),
            ) if value is not None}
            if decision is not None:
                return self._decide(task, decision, status, fields, now)
            renewing = runner_id is not None and status in (None, "running")
            resuming = (renewing and task["status"] == "pending"
                        and task.get("runner_id") == runner_id)
            if status is None or (renewing and held_by == runner_id) or resuming:
                if resuming:  # its lease ran out, and no one has claimed the task since
                    fields.update(status="running", **lease(runner_id, task["lease_seconds"],
                                                            now))
                elif renewing:
                    if held_by != runner_id:
                        raise IllegalTransition(f"Task {task_id} is not running under a "
                                                f"lease of runner {runner_id}.")
                    fields.update(lease(runner_id, task["lease_seconds"], now))
                elif task["status"] in FINAL_STATUSES:
                    raise IllegalTransition(f"Task {task_id} is {task['status']} already.")
                self._log_output(task_id, log_append)
                return self._write(task, fields, now)
            if (runner_id is not None and status == task["status"] in REPORTED_STATUSES
                    and task.get("runner_id") == runner_id):
                return self._with_command(task)  # a report sent again
            if status not in TRANSITIONS[task["status"]]:
                raise IllegalTransition(
                    f"Task {task_id} cannot go from {task['status']} to {status}."
                )
            if status == "needs_decision" and decision_prompt is None:
                raise InvalidTask("decision_prompt",
                                  "A task goes to needs_decision with a decision_prompt.")
            fields["status"] = status
            if status == "running":
                fields.update(lease(runner_id, DEFAULT_LEASE_SECONDS, now) if runner_id
                              else {"runner_id": None, "lease_expires_at": None})
                fields["attempts"] = task.get("attempts", 0) + 1
            else:
                fields["lease_expires_at"] = None
            if status in FINAL_STATUSES:
                fields["recorded"] = False
                fields["duration_seconds"] = (elapsed_seconds(task, now)
                                              if duration_seconds is None else duration_seconds)
            self._log_output(task_id, log_append)
            changed = self._write(task, fields, now)
            self._record_finished(raise_errors=True)
            return changed

    def _decide(
        self, task: dict[str, Any], decision: str, status: str | None,
        fields: dict[str, Any], now: datetime,
    ) -> dict[str, Any]:
        if task["status"] != "needs_decision" or status not in (None, "pending"):
            raise IllegalTransition(f"Task {task['id']} is {task['status']}: a decision "
                                    "answers a task that needs_decision, and sends it back "
                                    "to pending.")
        return self._write(task, {**fields, "status": "pending", "decision": decision,
                                  "runner_id": None, "lease_expires_at": None}, now)

    def _log_output(self, task_id: str, text: str | None) -> None:
        if text:
            self.task_logs.append(task_id, text)

    def task_log(self, task_id: str) -> dict[str, Any]:
        """What runners have sent of the task's output so far (the last MiB)."""
        task = self.get(task_id)
        return {"task_id": task_id, "log": self.task_logs.read(task_id),
                "command": task["command"], "output": task["output"]}
