"""Task metrics: one record per finished task, and rolling-window aggregates.

Works with or without a Flask app: the API builds a :class:`MetricsService` per app,
and the runner uses the module functions :func:`record_task` and :func:`get_aggregates`,
which find the store through the environment (``AGENT_LOGS_DIR``).

Each process keeps the records as compact columns and, on every call, reads only the
bytes appended since its last read. ``record_task`` checks and appends under the
store's lock, so a task_id gets exactly one record whoever records it.
"""
from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

from app import config
from app.clock import Clock, isoformat, parse_iso, utc_now
from app.models.metrics import FINAL_STATUSES
from app.services.metric_columns import MetricRecord, RecordColumns
from app.services.metrics_window import WindowAggregate
from app.services.task_id_index import TaskIdIndex
from app.storage import Batch, JsonlLog

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
ONE_MICROSECOND = timedelta(microseconds=1)
CACHED_WINDOWS = 4
T = TypeVar("T")


def to_micros(moment: datetime) -> int:
    return (moment - EPOCH) // ONE_MICROSECOND


def _is_duration(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def _is_label(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def decode_record(raw: dict[str, Any]) -> MetricRecord | None:
    """A stored line as a :class:`MetricRecord`, or None if it is not a valid record."""
    task_id, task_type, model = raw.get("task_id"), raw.get("task_type"), raw.get("model")
    duration, status, created_at = (
        raw.get("duration_seconds"), raw.get("status"), raw.get("created_at")
    )
    if not (_is_label(task_id) and _is_label(task_type) and _is_label(model)):
        return None
    if status not in FINAL_STATUSES or not _is_duration(duration):
        return None
    try:
        created_us = to_micros(parse_iso(created_at))
    except (TypeError, ValueError):
        return None
    return MetricRecord(
        task_id, task_type, model, status == "completed", round(duration * 1e6), created_us
    )


def first_records(batch: Batch, task_ids: TaskIdIndex) -> list[MetricRecord]:
    """The batch's valid records whose task_id has no record yet (noted in ``task_ids``).

    Invalid lines and second records of a task are logged and skipped.
    """
    decoded = []
    for offset, raw in batch.records:
        record = decode_record(raw)
        if record is None:
            log.warning("skipping invalid metric record at byte %d", offset)
        else:
            decoded.append((offset, record))
    fresh = task_ids.add_new([(r.task_id, offset) for offset, r in decoded])
    for (offset, record), new in zip(decoded, fresh):
        if not new:
            log.warning("skipping second record of task %s at byte %d", record.task_id, offset)
    return [record for (_, record), new in zip(decoded, fresh) if new]


class MetricsService:
    def __init__(
        self, path: str | Path, *, clock: Clock = utc_now, fsync: bool = True
    ) -> None:
        self.log = JsonlLog(path, fsync=fsync)
        self.clock = clock
        self._reader = self.log.reader()
        self._guard = threading.RLock()
        self._start_over()

    def _start_over(self) -> None:
        self.columns = RecordColumns()
        self._task_ids = TaskIdIndex(self._task_id_at)
        self._windows: OrderedDict[int, WindowAggregate] = OrderedDict()

    def _task_id_at(self, offset: int) -> str | None:
        raw = self.log.read_line_at(offset)
        return raw.get("task_id") if raw else None

    def refresh(self) -> None:
        """Take in whatever was appended (or rebuild if the file was replaced)."""
        with self._guard:
            for batch in self._reader.poll():
                if batch.reset:
                    self._start_over()
                self.columns.add(first_records(batch, self._task_ids))

    def read_columns(self, view: Callable[[RecordColumns], T]) -> T:
        """``view(columns)``, computed after a refresh under the guard, so it sees one state."""
        with self._guard:
            self.refresh()
            return view(self.columns)

    def stored_records(self) -> Iterator[MetricRecord]:
        """Every record the aggregates count, in store order, read afresh in bounded chunks."""
        reader = self.log.reader()
        try:
            task_ids = TaskIdIndex(self._task_id_at)
            for batch in reader.poll():
                yield from first_records(batch, task_ids)
        finally:
            reader.close()

    def record_task(
        self,
        task_id: str,
        task_type: str,
        model: str,
        duration_seconds: float,
        status: str,
    ) -> bool:
        """Append the task's record unless it has one already. True if appended."""
        if not (_is_label(task_id) and _is_label(task_type) and _is_label(model)):
            raise ValueError("task_id, task_type and model must be non-empty strings")
        if status not in FINAL_STATUSES:
            raise ValueError(f"status must be one of {FINAL_STATUSES}, not {status!r}")
        if not _is_duration(duration_seconds):
            raise ValueError("duration_seconds must be a finite number >= 0")
        with self._guard, self.log.locked():
            self.refresh()
            if self._task_ids.contains(task_id):
                return False
            self.log.append([{
                "task_id": task_id,
                "task_type": task_type,
                "model": model,
                "duration_seconds": round(float(duration_seconds), 6),
                "status": status,
                "created_at": isoformat(self.clock()),
            }])
            self.refresh()
        return True

    def get_aggregates(self, window_days: int = 7) -> dict[str, Any]:
        """Aggregates over records created within the last ``window_days`` days."""
        with self._guard:
            self.refresh()
            window = self._windows.pop(window_days, None) or WindowAggregate()
            self._windows[window_days] = window
            while len(self._windows) > CACHED_WINDOWS:
                self._windows.popitem(last=False)
            cutoff = self.clock() - timedelta(days=window_days)
            window.update(self.columns, to_micros(cutoff))
            return {"window_days": window_days, **window.summary(self.columns)}


_services: dict[Path, MetricsService] = {}


def service_for(logs_dir: str | Path | None = None) -> MetricsService:
    """The process-wide service for a logs folder (default: from the environment)."""
    settings = config.from_env()
    path = config.metrics_path(logs_dir or settings["AGENT_LOGS_DIR"]).resolve()
    if path not in _services:
        _services[path] = MetricsService(path, fsync=settings["AGENT_FSYNC"])
    return _services[path]


def record_task(
    task_id: str,
    task_type: str,
    model: str,
    duration_seconds: float,
    status: str,
    *,
    logs_dir: str | Path | None = None,
) -> bool:
    return service_for(logs_dir).record_task(task_id, task_type, model, duration_seconds, status)


def get_aggregates(window_days: int = 7, *, logs_dir: str | Path | None = None) -> dict[str, Any]:
    return service_for(logs_dir).get_aggregates(window_days)
