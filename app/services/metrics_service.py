"""Task metrics: one record per finished task, and rolling-window aggregates.

Works with or without a Flask app: the API builds a :class:`MetricsService` per app;
without one, the module functions :func:`record_task` (the runner's) and
:func:`get_aggregates` find the store through the environment (``AGENT_LOGS_DIR``).

Each process keeps the records as compact columns and, on every call, reads only the
bytes appended since its last read. ``record_task`` checks and appends under the
store's lock, so a task_id gets exactly one record whoever records it.
"""
from __future__ import annotations

import gc
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from app import config
from app.clock import Clock, isoformat, utc_now
from app.models.agent import MAX_DURATION_SECONDS
from app.models.metrics import FINAL_STATUSES
from app.services.metric_columns import RecordColumns
from app.services.metric_records import (
    MetricRecord,
    RecordBatch,
    decode_batch,
    decode_record,
    is_duration,
    is_label,
    stored_record,
    to_micros,
)
from app.services.metric_scan import skim, stamp_of
from app.services.metric_totals import Totals
from app.services.metrics_window import WindowAggregate, window_bounds
from app.services.retention import CompactionReport, compact, cutoff
from app.services.task_id_index import TaskIdIndex
from app.storage import Chunk, JsonlLog, LogReader

log = logging.getLogger(__name__)

CACHED_WINDOWS = 4
T = TypeVar("T")
SKIM_EVERYTHING = to_micros(datetime(9999, 1, 1, tzinfo=timezone.utc))


@dataclass(frozen=True)
class SkimmedRange:
    """Lines only skimmed for task_ids, and the newest created_at among them."""

    start: int
    end: int
    newest: bytes


FirstSeen = Callable[[list[str], np.ndarray], np.ndarray]


def valid_task_id_at(reader: LogReader, offset: int) -> str | None:
    """The task_id of the valid record on the line at ``offset``, if it holds one."""
    raw = reader.read_line_at(offset)
    record = decode_record(raw) if raw else None
    return record.task_id if record else None


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Hold off the cyclic garbage collector while decoding: a chunk makes thousands of
    short-lived dicts and no cycles, and the collections they would set off cost about a
    quarter of a cold read."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def first_records(chunk: Chunk, first_seen: FirstSeen) -> RecordBatch:
    """The chunk's valid records that ``first_seen`` takes as the first of their task;
    invalid lines and second records of a task are logged and skipped."""
    batch = decode_batch(*chunk.decode_columns())
    fresh = first_seen(batch.task_ids, batch.offsets)
    if not fresh.all():
        log.warning("skipping %d repeated record(s) of a task_id already recorded",
                    int((~fresh).sum()))
    return batch.select(fresh)


class MetricsService:
    def __init__(
        self,
        path: str | Path,
        *,
        clock: Clock = utc_now,
        fsync: bool = True,
        window_days: int = 7,
    ) -> None:
        self.log = JsonlLog(path, fsync=fsync)
        self.clock = clock
        self.window_days = window_days
        self._reader = self.log.reader()
        self._guard = threading.RLock()
        self._start_over()

    def close_files(self) -> None:
        """Close the store's file; the next call reopens it and goes on where it was."""
        with self._guard:
            self._reader.close()

    def _start_over(self) -> None:
        self.columns = RecordColumns()
        self._task_ids = TaskIdIndex(self._task_id_at)
        self._windows: OrderedDict[int, WindowAggregate] = OrderedDict()
        self._skimmed: list[SkimmedRange] = []

    def _task_id_at(self, offset: int) -> str | None:
        return valid_task_id_at(self._reader, offset)

    def refresh(self, skim_before_us: int | None = None) -> None:
        """Take in whatever was appended (or rebuild if the file was replaced).

        With ``skim_before_us``, chunks of canonical lines all older than that are only
        skimmed for their task_ids; :meth:`_complete_since` decodes them when needed.
        """
        older_than = None if skim_before_us is None else stamp_of(skim_before_us)
        with self._guard, cyclic_gc_paused():
            for chunk in self._reader.poll_chunks():
                if chunk.reset:
                    self._start_over()
                skimmed = skim(chunk.start, chunk.data, older_than) if older_than else None
                if skimmed is None:
                    self.columns.add(first_records(chunk, self._task_ids.add_new))
                else:
                    self._task_ids.add_all(skimmed.task_ids, skimmed.offsets)
                    self._remember_skimmed(SkimmedRange(chunk.start, chunk.end, skimmed.newest))

    def _remember_skimmed(self, skimmed: SkimmedRange) -> None:
        last = self._skimmed[-1] if self._skimmed else None
        if last is not None and last.end == skimmed.start:
            self._skimmed[-1] = SkimmedRange(last.start, skimmed.end,
                                             max(last.newest, skimmed.newest))
        else:
            self._skimmed.append(skimmed)

    def _complete_since(self, cutoff_us: int | None) -> None:
        """Decode the skimmed ranges that may hold records created at or after the cutoff
        (all of them when it is None), so the columns hold every such record."""
        older_than = b"" if cutoff_us is None else stamp_of(cutoff_us)
        needed = [skimmed for skimmed in self._skimmed if skimmed.newest >= older_than]
        if not needed:
            return
        self._skimmed = [skimmed for skimmed in self._skimmed if skimmed.newest < older_than]
        with cyclic_gc_paused():
            for skimmed in needed:
                for chunk in self._reader.read_range(skimmed.start, skimmed.end):
                    self.columns.add(first_records(chunk, self._task_ids.first_seen))

    def snapshot(self, since_us: int | None = None) -> RecordColumns:
        """Columns holding every record created at or after ``since_us`` (None: all)."""
        with self._guard:
            self.refresh(skim_before_us=since_us)
            self._complete_since(since_us)
            return self.columns

    def read_columns(self, view: Callable[[RecordColumns], T], since_us: int | None = None) -> T:
        """``view(columns)`` on a :meth:`snapshot`, under the guard, so it sees one state."""
        with self._guard:
            return view(self.snapshot(since_us))

    def stored_records(self) -> Iterator[MetricRecord]:
        """Every record the aggregates count, in store order, read afresh in bounded chunks."""
        reader = self.log.reader()
        try:
            task_ids = TaskIdIndex(partial(valid_task_id_at, reader))
            for chunk in reader.poll_chunks():
                yield from first_records(chunk, task_ids.add_new).rows()
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
        if not (is_label(task_id) and is_label(task_type) and is_label(model)):
            raise ValueError("task_id, task_type and model must be non-empty strings")
        if status not in FINAL_STATUSES:
            raise ValueError(f"status must be one of {FINAL_STATUSES}, not {status!r}")
        if not is_duration(duration_seconds):
            raise ValueError(
                f"duration_seconds must be a number from 0 to {MAX_DURATION_SECONDS:g}"
            )
        with self._guard, self.log.locked():
            self.refresh(skim_before_us=SKIM_EVERYTHING)
            if self._task_ids.contains(task_id):
                return False
            self.log.append([stored_record(
                task_id, task_type, model, round(float(duration_seconds), 6), status,
                isoformat(self.clock()),
            )])
            self.refresh(skim_before_us=SKIM_EVERYTHING)
        return True

    def compact(self, keep_days: int) -> CompactionReport:
        """Rewrite the store keeping the valid records created within ``keep_days`` days.

        Lines that are not valid records (what :meth:`refresh` skips: bad fields, a
        ``created_at`` that does not parse, a second record of a task) are dropped and
        counted. A dropped task_id no longer counts as recorded. The totals of the
        expired records are carried over, so :meth:`totals` does not go down.
        """
        oldest = to_micros(cutoff(self.clock(), keep_days))
        dropped = Totals()

        def keep(
            lines: Iterator[dict[str, Any]], report: CompactionReport
        ) -> Iterator[dict[str, Any]]:
            seen: set[str] = set()
            for raw in lines:
                record = decode_record(raw)
                if record is None or record.task_id in seen:
                    report.invalid += 1
                    continue
                seen.add(record.task_id)
                if record.created_us < oldest:
                    report.expired += 1
                    dropped.add(record)
                else:
                    report.kept += 1
                    yield raw

        return compact(
            self.log, keep, carry=lambda before: Totals.from_json(before).merged(dropped).to_json()
        )

    def totals(self) -> Totals:
        """Totals of every record ever stored: those in the store and those compacted
        away (read for the same store file, so the two never overlap or miss)."""
        with self._guard:
            columns = self.snapshot()
            carried = self.log.carried(self._reader)
            return Totals.from_columns(columns).merged(Totals.from_json(carried))

    def get_aggregates(self, window_days: int | None = None) -> dict[str, Any]:
        """Aggregates over records created within the last ``window_days`` days (default:
        the service's ``window_days``), up to now."""
        window_days = window_days or self.window_days
        with self._guard:
            first_us, last_us = window_bounds(to_micros(self.clock()), window_days)
            columns = self.snapshot(since_us=first_us)
            window = self._windows.pop(window_days, None) or WindowAggregate()
            self._windows[window_days] = window
            while len(self._windows) > CACHED_WINDOWS:
                self._windows.popitem(last=False)
            window.update(columns, first_us, last_us)
            return {"window_days": window_days, **window.summary(self.columns)}


_services: dict[Path, MetricsService] = {}
_services_guard = threading.Lock()


def service_for(logs_dir: str | Path | None = None) -> MetricsService:
    """The process-wide service for a logs folder (default: from the environment)."""
    settings = config.from_env()
    path = config.metrics_path(logs_dir or settings["AGENT_LOGS_DIR"]).resolve()
    with _services_guard:
        if path not in _services:
            _services[path] = MetricsService(path, fsync=settings["AGENT_FSYNC"],
                                             window_days=settings["METRICS_WINDOW_DAYS"])
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


def get_aggregates(
    window_days: int | None = None, *, logs_dir: str | Path | None = None
) -> dict[str, Any]:
    return service_for(logs_dir).get_aggregates(window_days)
