"""Task metrics: one record per finished task, and rolling-window aggregates.

Works with or without a Flask app: the API builds a :class:`MetricsService` per app;
without one, the module functions :func:`record_task` and :func:`get_aggregates` find
the store through the environment (``AGENT_DATABASE_URL``, else ``AGENT_LOGS_DIR``).

The records live in a :class:`~app.storage.stores.MetricStore`, which keeps them as
in-memory columns fed incrementally; this service checks records before they are
stored and turns the columns into windowed aggregates.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from app import config
from app.clock import Clock, isoformat, utc_now
from app.models.agent import MAX_DURATION_SECONDS
from app.models.metrics import FINAL_STATUSES
from app.services.metrics_window import WindowAggregate, window_bounds
from app.storage import backends
from app.storage.metric_columns import RecordColumns
from app.storage.metric_records import (
    MetricRecord,
    NO_OPTIONAL_FIELDS,
    is_duration,
    is_label,
    optional_fields,
    stored_record,
    to_micros,
)
from app.storage.metric_totals import Totals
from app.services.retention import cutoff
from app.storage.stores import CompactionReport
from app.storage.stores import MetricStore

CACHED_WINDOWS = 4
T = TypeVar("T")


class MetricsService:
    def __init__(
        self,
        store: MetricStore,
        *,
        clock: Clock = utc_now,
        window_days: int = 7,
    ) -> None:
        self.store = store
        self.clock = clock
        self.window_days = window_days
        self._guard = threading.RLock()
        self._windows: OrderedDict[int, WindowAggregate] = OrderedDict()

    def close_files(self) -> None:
        """Let go of the store's files or connections; the next call takes them again."""
        self.store.close()

    def read_columns(self, view: Callable[[RecordColumns], T], since_us: int | None = None) -> T:
        """``view(columns)`` on columns holding every record created at or after
        ``since_us`` (None: all), while they do not change."""
        return self.store.read(view, since_us)

    def stored_records(self) -> Iterator[MetricRecord]:
        """Every record the aggregates count, in store order, read afresh."""
        return self.store.records()

    def record_task(
        self,
        task_id: str,
        task_type: str,
        model: str,
        duration_seconds: float,
        status: str,
    ) -> bool:
        """Store the task's record unless it has one already. True if stored."""
        return self.store.record(self.checked_record(
            task_id, task_type, model, duration_seconds, status))

    def checked_record(
        self, task_id: str, task_type: str, model: str, duration_seconds: float, status: str,
        optional: Mapping[str, Any] = NO_OPTIONAL_FIELDS,
    ) -> dict[str, Any]:
        """The record to store for a finished task, created now, with the ``optional``
        fields known; ValueError if a field is not one a record can hold."""
        if not (is_label(task_id) and is_label(task_type) and is_label(model)):
            raise ValueError("task_id, task_type and model must be non-empty strings")
        if status not in FINAL_STATUSES:
            raise ValueError(f"status must be one of {FINAL_STATUSES}, not {status!r}")
        if not is_duration(duration_seconds):
            raise ValueError(
                f"duration_seconds must be a number from 0 to {MAX_DURATION_SECONDS:g}"
            )
        checked = optional_fields(optional)
        if checked != optional:
            raise ValueError(f"optional fields a record cannot hold: "
                             f"{sorted(set(optional) - set(checked))}")
        return stored_record(task_id, task_type, model, round(float(duration_seconds), 6),
                             status, isoformat(self.clock()), checked)

    def compact(self, keep_days: int) -> CompactionReport:
        """Drop the records created more than ``keep_days`` days ago. Their totals are
        carried over, so :meth:`totals` does not go down."""
        return self.store.compact(to_micros(cutoff(self.clock(), keep_days)))

    def totals(self) -> Totals:
        """Totals of every record ever stored: those in the store and those compacted
        away."""
        return self.store.totals()

    def get_aggregates(self, window_days: int | None = None) -> dict[str, Any]:
        """Aggregates over records created within the last ``window_days`` days (default:
        the service's ``window_days``), up to now."""
        window_days = window_days or self.window_days
        first_us, last_us = window_bounds(to_micros(self.clock()), window_days)
        with self._guard:
            window = self._windows.pop(window_days, None) or WindowAggregate()
            self._windows[window_days] = window
            while len(self._windows) > CACHED_WINDOWS:
                self._windows.popitem(last=False)

            def summary(columns: RecordColumns) -> dict[str, Any]:
                window.update(columns, first_us, last_us)
                return window.summary(columns)

            return {"window_days": window_days, **self.store.read(summary, first_us)}


_services: dict[str, MetricsService] = {}
_services_guard = threading.Lock()


def service_for(logs_dir: str | Path | None = None) -> MetricsService:
    """The process-wide service for the configured store (``logs_dir`` overrides the
    folder of the JSONL stores)."""
    settings = config.from_env()
    if logs_dir is not None:
        settings["AGENT_LOGS_DIR"] = str(logs_dir)
    with _services_guard:
        key = backends.location_key(settings)
        if key not in _services:
            _, metrics = backends.open_stores(settings)
            _services[key] = MetricsService(metrics, window_days=settings["METRICS_WINDOW_DAYS"])
        return _services[key]


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
