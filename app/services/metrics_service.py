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
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from app import config
from app.clock import Clock, isoformat, parse_iso, utc_now
from app.models.metrics import FINAL_STATUSES, MAX_DURATION_SECONDS
from app.services.metric_columns import MetricRecord, RecordColumns
from app.services.metrics_window import WindowAggregate
from app.services.retention import CompactionReport, cutoff
from app.services.task_id_index import TaskIdIndex
from app.storage import JsonlLog

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
ONE_MICROSECOND = timedelta(microseconds=1)
CACHED_WINDOWS = 4


def to_micros(moment: datetime) -> int:
    return (moment - EPOCH) // ONE_MICROSECOND


def _is_duration(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 <= value <= MAX_DURATION_SECONDS
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
                decoded = []
                for offset, raw in batch.records:
                    record = decode_record(raw)
                    if record is None:
                        log.warning("skipping invalid metric record at byte %d", offset)
                    else:
                        decoded.append((offset, record))
                fresh = self._task_ids.add_new([(r.task_id, offset) for offset, r in decoded])
                for (offset, record), new in zip(decoded, fresh):
                    if not new:
                        log.warning("skipping second record of task %s at byte %d",
                                    record.task_id, offset)
                self.columns.add([record for (_, record), new in zip(decoded, fresh) if new])

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
            raise ValueError(
                f"duration_seconds must be a number from 0 to {MAX_DURATION_SECONDS:g}"
            )
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

    def compact(self, keep_days: int) -> CompactionReport:
        """Rewrite the store keeping the valid records created within ``keep_days`` days.

        Lines that are not valid records (what :meth:`refresh` skips: bad fields, a
        ``created_at`` that does not parse, a second record of a task) are dropped and
        counted. A dropped task_id no longer counts as recorded.
        """
        oldest = to_micros(cutoff(self.clock(), keep_days))
        report = CompactionReport()

        def keep(lines: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
            seen: set[str] = set()
            for raw in lines:
                record = decode_record(raw)
                if record is None or record.task_id in seen:
                    report.invalid += 1
                    continue
                seen.add(record.task_id)
                if record.created_us < oldest:
                    report.expired += 1
                else:
                    report.kept += 1
                    yield raw

        unreadable = self.log.rewrite(keep)
        report.invalid += unreadable
        log.info("compacted %s: %s", self.log.path, report.summary())
        return report

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
