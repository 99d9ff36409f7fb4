"""The task store as a JSONL file, the embedded default.

A task's first line holds the whole task; each state change appends a line with the
task's id and only the fields that changed, laid over what came before (lines of
earlier versions, which repeat the whole task, read the same). So a stored task costs
about its direction and context once, whatever its history. Each process takes in what
was appended since its last read, keeping in memory only what finding, listing and
claiming tasks need (:mod:`app.storage.jsonl.task_rows`); a task's whole state is read back
from its lines. A transaction is read, checked and written under the log's lock, which
is what stops two runners from claiming the same task.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from app.clock import parse_iso
from app.models.agent import ENDED_STATUSES
from app.storage.jsonl.checkpoint import (
    CHECKPOINT_BYTES,
    Checkpoint,
    CheckpointedStore,
    Checkpoints,
)
from app.storage.jsonl.log_reader import rewound_on_error
from app.storage.jsonl.log_writer import JsonlLog
from app.storage.jsonl.metrics import cyclic_gc_paused
from app.storage.jsonl.compaction import compact
from app.storage.stores import CompactionReport
from app.storage.stores import MetricStore, Task, TaskExists, check_order
from app.storage.jsonl.task_logs import TaskLogs
from app.storage.jsonl.task_rows import TaskRows, merged_state

CHECKPOINT_KIND = "tasks/2"


class JsonlTaskStore(CheckpointedStore):
    def __init__(self, path: str | Path, *, metrics: MetricStore, fsync: bool = True,
                 checkpoint_bytes: int | None = CHECKPOINT_BYTES) -> None:
        self.log = JsonlLog(path, fsync=fsync)
        self.location = str(self.log.path)
        self.task_logs = TaskLogs(Path(path).with_name("task-logs"))
        self.metrics = metrics
        self._reader = self.log.reader()
        self._guard = threading.RLock()
        self._checkpoints = Checkpoints(self.log.path, CHECKPOINT_KIND, checkpoint_bytes)
        self.rows = TaskRows(self._reader.read_line_at)

    def refresh(self) -> None:
        """Take in what was appended since the last read (all of it, if the file was
        replaced)."""
        with self._guard, cyclic_gc_paused(), \
                rewound_on_error(self._reader, self._start_over):
            for chunk in self._checkpoints.poll(self._reader, self._restore, self._start_over):
                self.rows.take_columns(*chunk.decode_columns())
            if not self.log.holding():  # writers should not wait for a checkpoint
                self._checkpoints.save_if_due(self._reader, self._checkpoint)

    def _start_over(self) -> None:
        self.rows = TaskRows(self._reader.read_line_at)

    def _checkpoint(self) -> Checkpoint:
        arrays, meta = self.rows.saved()
        return Checkpoint(CHECKPOINT_KIND, {}, arrays, meta)

    def _follower(self, path: Path) -> JsonlTaskStore:
        return JsonlTaskStore(path, metrics=self.metrics, fsync=False, checkpoint_bytes=None)

    def _restore(self, checkpoint: Checkpoint) -> None:
        self.rows = TaskRows.restored(self._reader.read_line_at, checkpoint.arrays,
                                      checkpoint.meta)

    def insert(self, task: Task) -> None:
        with self._guard, self.log.locked():
            self.refresh()
            if self._state(task["id"]) is not None:
                raise TaskExists(f"task {task['id']} exists")
            self.log.append([task])

    def _state(self, task_id: str) -> Task | None:
        row = self.rows.row_of(task_id)
        state = None if row is None else self.rows.state(row)
        return state if state is not None and state.get("id") == task_id else None

    def get(self, task_id: str) -> Task | None:
        with self._guard:
            self.refresh()
            return self._state(task_id)

    def page(
        self, statuses: tuple[str, ...] | None, task_type: str | None, newest_first: bool,
        limit: int | None, offset: int = 0, by: str = "created_at",
    ) -> tuple[list[Task], int]:
        check_order(by)
        with self._guard:
            self.refresh()
            return self.rows.page(statuses, task_type, by, newest_first, limit, offset)

    def counts(self) -> dict[str, int]:
        with self._guard:
            self.refresh()
            return self.rows.counts()

    def states(self) -> Iterator[Task]:
        """Every task's state in claim order, read afresh from the file (for copying)."""
        reader = self.log.reader()
        try:
            rows = TaskRows(reader.read_line_at)
            with cyclic_gc_paused():
                for chunk in reader.poll_chunks():
                    rows.take_columns(*chunk.decode_columns())
            for row in rows.rows_in_claim_order():
                yield rows.state(row)
        finally:
            reader.close()

    def has_due(self, now: datetime, task_id: str | None = None) -> bool:
        with self._guard:
            self.refresh()
            if self.rows.unrecorded:
                return True
            row = None if task_id is None else self.rows.row_of(task_id)
            if task_id is not None and row is None:
                return False
            return bool(self.rows.expired(now, row))

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
                task_id = line.get("id")
                state = merged_state(latest.get(task_id) if isinstance(task_id, str) else None,
                                     line)
                if state is None:
                    report.invalid += 1
                    continue
                report.superseded += state["id"] in latest
                latest[state["id"]] = state
            for state in latest.values():
                if state["status"] not in ENDED_STATUSES or state.get("recorded") is False:
                    report.kept += 1
                    yield state
                    continue
                try:
                    updated = parse_iso(str(state.get("updated_at")))
                except ValueError:
                    report.invalid += 1
                    continue
                if updated < oldest:
                    report.expired += 1
                    dropped.add(state["id"])
                else:
                    report.kept += 1
                    yield state

        dropped: set[str] = set()
        report = compact(self.log, keep, before_replace=self._save_replacement_checkpoint)
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

    def _states(self, rows: list[int]) -> list[Task]:
        return [self.store.rows.state(row) for row in rows]

    def get(self, task_id: str) -> Task | None:
        return self.store._state(task_id)

    def held_by(self, runner_id: str, now: datetime) -> Task | None:
        row = self.store.rows.held_by(runner_id, now)
        return None if row is None else self.store.rows.state(row)

    def next_pending(self, task_types: list[str] | None, now: datetime,
                     excluded_models: frozenset[str] = frozenset()) -> Task | None:
        row = self.store.rows.next_pending(task_types, now, excluded_models)
        return None if row is None else self.store.rows.state(row)

    def running_count(self, models: list[str], now: datetime) -> int:
        return self.store.rows.running_count(models, now)

    def lock(self, keys: list[str], wait: bool = True) -> bool:
        """Nothing to take: the transaction holds the store's lock, which every other
        writer waits for."""
        return True

    def expired(self, now: datetime, task_id: str | None = None) -> list[Task]:
        rows = self.store.rows
        row = None if task_id is None else rows.row_of(task_id)
        if task_id is not None and row is None:
            return []
        return sorted(self._states(rows.expired(now, row)), key=lambda task: task["id"])

    def unrecorded(self) -> list[Task]:
        return sorted(self._states(list(self.store.rows.unrecorded)),
                      key=lambda task: task["id"])

    def save(self, change: dict[str, Any]) -> None:
        if self.store.rows.row_of(change["id"]) is None:
            raise LookupError(f"task {change['id']} is not in the store")
        self.store.log.append([change])
        self.store.refresh()

    def record(self, record: dict[str, Any]) -> None:
        """The record goes to the metric store first; the task is marked recorded after.
        Whatever stops the second write (a killed process), the task stays unrecorded
        and the next transaction writes its record again, which finds it there."""
        self.store.metrics.record(record)
        self.save({"id": record["task_id"], "recorded": True})
