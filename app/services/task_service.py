"""Task lifecycle: create, list, get, and status transitions.

Task state lives in the task log (one line per state change, the whole task each time),
never only in process memory, so every worker and every process sees the same tasks.
Each process replays what was appended since its last read. A transition is read,
checked and written under the log's lock, which is what stops two runners from
claiming the same task.
"""
from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.clock import Clock, isoformat, parse_iso, utc_now
from app.models.agent import MAX_DURATION_SECONDS
from app.models.metrics import FINAL_STATUSES
from app.services.metrics_service import MetricsService
from app.services.retention import CompactionReport, compact, cutoff
from app.services.routing import Route
from app.storage import JsonlLog

TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"running", "needs_decision", "completed", "failed"}),
    "running": frozenset({"needs_decision", "completed", "failed"}),
    "needs_decision": frozenset({"running", "completed", "failed"}),
    "completed": frozenset(),
    "failed": frozenset(),
}


log = logging.getLogger(__name__)


TEXT_FIELDS = ("id", "direction", "task_type", "model", "command")
TIME_FIELDS = ("created_at", "updated_at")


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
        and all(isinstance(state.get(name), str) and state[name] for name in TEXT_FIELDS)
        and all(_is_time(state.get(name)) for name in TIME_FIELDS)
        and (state.get("started_at") is None or _is_time(state["started_at"]))
        and isinstance(state.get("context"), dict)
    )


class TaskNotFound(LookupError):
    pass


class IllegalTransition(ValueError):
    pass


class TaskService:
    def __init__(
        self,
        path: str | Path,
        *,
        routes: dict[str, Route],
        metrics: MetricsService,
        clock: Clock = utc_now,
        fsync: bool = True,
    ) -> None:
        self.log = JsonlLog(path, fsync=fsync)
        self.routes = routes
        self.metrics = metrics
        self.clock = clock
        self._reader = self.log.reader()
        self._guard = threading.RLock()
        self._tasks: dict[str, dict[str, Any]] = {}

    def close_files(self) -> None:
        """Close the store's file; the next call reopens it and goes on where it was."""
        with self._guard:
            self._reader.close()

    def refresh(self) -> None:
        """Replay what was appended since the last read: the latest state per task."""
        with self._guard:
            for batch in self._reader.poll():
                if batch.reset:
                    self._tasks = {}
                for _, state in batch.records:
                    if is_task_state(state):
                        self._tasks[state["id"]] = state

    def compact(self, keep_days: int) -> CompactionReport:
        """Rewrite the store as one line per task: its latest state.

        A final task whose ``updated_at`` is more than ``keep_days`` days ago is dropped;
        a task not yet final is always kept. Lines that are not task states, and final
        tasks whose ``updated_at`` does not parse, are dropped and counted as invalid.
        """
        oldest = cutoff(self.clock(), keep_days)

        def keep(
            lines: Iterator[dict[str, Any]], report: CompactionReport
        ) -> Iterator[dict[str, Any]]:
            latest: dict[str, dict[str, Any]] = {}
            for state in lines:
                if not is_task_state(state):
                    report.invalid += 1
                    continue
                report.superseded += state["id"] in latest
                latest[state["id"]] = state
            for state in latest.values():
                if state["status"] not in FINAL_STATUSES:
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
                else:
                    report.kept += 1
                    yield state

        return compact(self.log, keep)

    def route(self, task_type: str) -> Route:
        return self.routes[task_type]

    def create(self, direction: str, task_type: str, context: dict[str, Any]) -> dict[str, Any]:
        route = self.route(task_type)
        model = context.get("model_override") or route.model
        now = isoformat(self.clock())
        task = {
            "id": uuid.uuid4().hex,
            "direction": direction,
            "task_type": task_type,
            "status": "pending",
            "model": model,
            "command": route.command_for(direction, model),
            "context": context,
            "output": None,
            "created_at": now,
            "updated_at": now,
            "started_at": None,
            "duration_seconds": None,
        }
        self.log.append([task])
        return task

    def get(self, task_id: str) -> dict[str, Any]:
        with self._guard:
            self.refresh()
            task = self._tasks.get(task_id)
        if task is None:
            raise TaskNotFound(f"Task {task_id} not found.")
        return task

    def list_tasks(
        self,
        status: str | None = None,
        task_type: str | None = None,
        limit: int = 20,
        order: str = "newest",
    ) -> tuple[list[dict[str, Any]], int]:
        """Matching tasks, newest (or oldest) first, at most ``limit``; and how many
        matched."""
        with self._guard:
            self.refresh()
            matches = [
                task for task in self._tasks.values()
                if (status is None or task["status"] == status)
                and (task_type is None or task["task_type"] == task_type)
            ]
        matches.sort(key=lambda task: task["created_at"], reverse=order == "newest")
        return matches[:limit], len(matches)

    def counts_by_status(self) -> dict[str, int]:
        with self._guard:
            self.refresh()
            counts = dict.fromkeys(TRANSITIONS, 0)
            for task in self._tasks.values():
                counts[task["status"]] += 1
        return counts

    def transition(
        self,
        task_id: str,
        status: str,
        *,
        output: str | None = None,
        duration_seconds: float | None = None,
    ) -> dict[str, Any]:
        """Move a task to ``status``; a final status also records its metric."""
        with self._guard, self.log.locked():
            task = dict(self.get(task_id))
            if status not in TRANSITIONS[task["status"]]:
                raise IllegalTransition(
                    f"Task {task_id} cannot go from {task['status']} to {status}."
                )
            moment = self.clock()
            task["status"] = status
            task["updated_at"] = isoformat(moment)
            if output is not None:
                task["output"] = output
            if status == "running" and task.get("started_at") is None:
                task["started_at"] = task["updated_at"]
            if status in FINAL_STATUSES:
                if duration_seconds is None:
                    began = parse_iso(task.get("started_at") or task["created_at"])
                    elapsed = (moment - began).total_seconds()
                    duration_seconds = min(max(elapsed, 0.0), MAX_DURATION_SECONDS)
                task["duration_seconds"] = duration_seconds
                self.metrics.record_task(
                    task_id, task["task_type"], task["model"], duration_seconds, status
                )
            self.log.append([task])
            self.refresh()
        return task
