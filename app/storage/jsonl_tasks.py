"""The task store as a JSONL file, the embedded default.

A task's first line holds the whole task; each state change appends a line with the
task's id and only the fields that changed, laid over what came before (lines of
earlier versions, which repeat the whole task, read the same). So a stored task costs
about its direction and context once, whatever its history. Each process replays what
was appended since its last read. A transaction is read, checked and written under the
log's lock, which is what stops two runners from claiming the same task.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from app.clock import parse_iso
from app.models.agent import STATUSES, TASK_TYPES
from app.models.metrics import FINAL_STATUSES
from app.storage.jsonl_log import JsonlLog
from app.storage.retention import CompactionReport, compact
from app.storage.stores import MetricStore, Task, lease_expired
from app.storage.task_logs import TaskLogs

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
        state.get("status") in STATUSES
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


def _claim_order(task: Task) -> tuple[str, str]:
    return task["created_at"], task["id"]


def _mark(ids: set[str], task_id: str, member: bool) -> None:
    if member:
        ids.add(task_id)
    else:
        ids.discard(task_id)


class JsonlTaskStore:
    def __init__(self, path: str | Path, *, metrics: MetricStore, fsync: bool = True) -> None:
        self.log = JsonlLog(path, fsync=fsync)
        self.location = str(self.log.path)
        self.task_logs = TaskLogs(Path(path).with_name("task-logs"))
        self.metrics = metrics
        self._reader = self.log.reader()
        self._guard = threading.RLock()
        self._tasks: dict[str, Task] = {}
        self._unrecorded: set[str] = set()
        """Final tasks whose metric record is not known to be written yet."""
        self._leased: set[str] = set()
        """Running tasks under a lease: the only ones whose lease can expire, so reads
        look for due expiries among them, not among every task."""

    def close(self) -> None:
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

    def insert(self, task: Task) -> None:
        self.log.append([task])

    def get(self, task_id: str) -> Task | None:
        with self._guard:
            self.refresh()
            return self._tasks.get(task_id)

    def page(
        self, status: str | None, task_type: str | None, newest_first: bool, limit: int,
        offset: int,
    ) -> tuple[list[Task], int]:
        with self._guard:
            self.refresh()
            matches = [
                task for task in self._tasks.values()
                if (status is None or task["status"] == status)
                and (task_type is None or task["task_type"] == task_type)
            ]
        matches.sort(key=_claim_order, reverse=newest_first)
        return matches[offset:offset + limit], len(matches)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        with self._guard:
            self.refresh()
            for task in self._tasks.values():
                counts[task["status"]] = counts.get(task["status"], 0) + 1
        return counts

    def states(self) -> list[Task]:
        with self._guard:
            self.refresh()
            return list(self._tasks.values())

    def _expired(self, now: datetime, task_id: str | None) -> list[Task]:
        leased = self._leased if task_id is None else self._leased & {task_id}
        return [self._tasks[leased_id] for leased_id in sorted(leased)
                if lease_expired(self._tasks[leased_id], now)]

    def has_due(self, now: datetime, task_id: str | None = None) -> bool:
        with self._guard:
            self.refresh()
            return bool(self._unrecorded or self._expired(now, task_id))

    @contextmanager
    def transaction(self) -> Iterator[JsonlTransaction]:
        with self._guard, self.log.locked():
            self.refresh()
            yield JsonlTransaction(self)

    def compact(self, oldest: datetime) -> tuple[CompactionReport, set[str]]:
        """Rewrite the file as one line per task: its latest state. Lines that are not
        task states, and final tasks whose ``updated_at`` does not parse, are dropped and
        counted as invalid. The logs runners sent of dropped tasks go with them."""

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
        self.remove_logs(dropped)
        return report, dropped

    def append_log(self, task_id: str, text: str) -> None:
        self.task_logs.append(task_id, text)

    def read_log(self, task_id: str) -> str:
        return self.task_logs.read(task_id)

    def remove_logs(self, task_ids: set[str]) -> None:
        self.task_logs.remove(task_ids)

    def writable(self) -> bool:
        return self.log.writable()


class JsonlTransaction:
    """Runs under the store's lock (see :meth:`JsonlTaskStore.transaction`)."""

    def __init__(self, store: JsonlTaskStore) -> None:
        self.store = store

    def get(self, task_id: str) -> Task | None:
        return self.store._tasks.get(task_id)

    def held_by(self, runner_id: str, now: datetime) -> Task | None:
        tasks = self.store._tasks
        held = [tasks[task_id] for task_id in self.store._leased
                if tasks[task_id].get("runner_id") == runner_id
                and not lease_expired(tasks[task_id], now)]
        return min(held, key=_claim_order, default=None)

    def oldest_pending(self, task_types: list[str] | None) -> Task | None:
        pending = [task for task in self.store._tasks.values() if task["status"] == "pending"
                   and (not task_types or task["task_type"] in task_types)]
        return min(pending, key=_claim_order, default=None)

    def expired(self, now: datetime, task_id: str | None = None) -> list[Task]:
        return self.store._expired(now, task_id)

    def unrecorded(self) -> list[Task]:
        return [self.store._tasks[task_id] for task_id in sorted(self.store._unrecorded)]

    def save(self, change: dict[str, Any]) -> None:
        self.store.log.append([change])
        self.store.refresh()

    def record(self, record: dict[str, Any]) -> None:
        """The record goes to the metric store first; the task is marked recorded after.
        Whatever stops the second write (a killed process), the task stays unrecorded
        and the next transaction writes its record again, which finds it there."""
        self.store.metrics.record(record)
        self.save({"id": record["task_id"], "recorded": True})
