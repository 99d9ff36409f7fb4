"""Aggregates over a rolling window, updated incrementally.

The columns are in time order, so a window (the records created in the last N days, up
to now) is a slice of them. Between two requests the slice moves at both ends: records
leave at the front as the clock moves, new ones enter at the back. Only those records are applied to
the counters and to a sorted array of the window's durations, so a request costs
O(changes + log n) for the counters and one memmove of the durations array when
anything changed. Percentiles are read off the sorted array: exact nearest-rank.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from app.storage.metric_columns import RecordColumns
from app.storage.metric_records import MICROS

PERCENTILES = (50, 90, 95, 99)
DAY_MICROS = 86_400 * MICROS


def window_bounds(now_us: int, window_days: int) -> tuple[int, int]:
    """The first and last ``created_at`` (microseconds) of a window ending now."""
    return now_us - window_days * DAY_MICROS, now_us


def nearest_rank(sorted_values: np.ndarray, percent: int) -> int:
    """The ceil(percent/100 * n)-th smallest value (1-based rank); 0 when empty."""
    count = len(sorted_values)
    if count == 0:
        return 0
    rank = -(-percent * count // 100)
    return int(sorted_values[max(rank, 1) - 1])


def _grown(counts: np.ndarray, size: int) -> np.ndarray:
    if len(counts) >= size:
        return counts
    return np.concatenate([counts, np.zeros(size - len(counts), counts.dtype)])


def _ratio(part: int, whole: int) -> float:
    return round(part / whole, 2) if whole else 0.0


class WindowAggregate:
    def __init__(self) -> None:
        self.columns: RecordColumns | None = None
        self._reset(start=0)

    def _reset(self, start: int) -> None:
        self.generation = self.columns.generation if self.columns else -1
        self.start = self.end = start
        self.durations = np.empty(0, np.int64)
        self.type_completed = np.zeros(0, np.int64)
        self.type_failed = np.zeros(0, np.int64)
        self.model_count = np.zeros(0, np.int64)
        self.model_duration_us = np.zeros(0, np.int64)

    def update(self, columns: RecordColumns, first_us: int, last_us: int) -> None:
        """Move the window to the records created from ``first_us`` to ``last_us``."""
        created = columns.column("created_us")
        start = int(np.searchsorted(created, first_us, side="left"))
        stop = int(np.searchsorted(created, last_us, side="right"))
        if (
            columns is not self.columns
            or columns.generation != self.generation
            or start < self.start
            or stop < self.end
        ):
            self.columns = columns
            self._reset(start)
        self._apply(columns, slice(self.start, min(start, self.end)), -1)
        self._apply(columns, slice(max(self.end, start), stop), +1)
        self.start, self.end = start, stop

    def _apply(self, columns: RecordColumns, rows: slice, sign: int) -> None:
        if rows.stop <= rows.start:
            return
        durations = columns.column("duration_us")[rows]
        completed = columns.column("completed")[rows].astype(bool)
        types = columns.column("type_code")[rows]
        models = columns.column("model_code")[rows]
        n_types, n_models = len(columns.task_types), len(columns.models)
        self.type_completed = _grown(self.type_completed, n_types)
        self.type_failed = _grown(self.type_failed, n_types)
        self.model_count = _grown(self.model_count, n_models)
        self.model_duration_us = _grown(self.model_duration_us, n_models)
        self.type_completed += sign * np.bincount(types[completed], minlength=n_types)
        self.type_failed += sign * np.bincount(types[~completed], minlength=n_types)
        self.model_count += sign * np.bincount(models, minlength=n_models)
        np.add.at(self.model_duration_us, models, sign * durations)
        changed = np.sort(durations)
        if sign > 0:
            at = np.searchsorted(self.durations, changed)
            self.durations = np.insert(self.durations, at, changed)
        else:
            first_of_run = np.searchsorted(changed, changed, side="left")
            at = np.searchsorted(self.durations, changed, side="left")
            at += np.arange(len(changed)) - first_of_run
            self.durations = np.delete(self.durations, at)

    def summary(self, columns: RecordColumns) -> dict[str, Any]:
        completed = int(self.type_completed.sum())
        failed = int(self.type_failed.sum())
        execution_time: dict[str, Any] = {
            f"p{percent}_seconds": nearest_rank(self.durations, percent) / MICROS
            for percent in PERCENTILES
        }
        execution_time["max_seconds"] = (
            int(self.durations[-1]) / MICROS if len(self.durations) else 0.0
        )
        execution_time["count"] = len(self.durations)
        by_task_type = {}
        for code, name in enumerate(columns.task_types.names[: len(self.type_completed)]):
            done, lost = int(self.type_completed[code]), int(self.type_failed[code])
            if done + lost:
                by_task_type[name] = {
                    "count": done + lost,
                    "completed": done,
                    "failed": lost,
                    "success_rate": _ratio(done, done + lost),
                }
        by_model = {}
        for code, name in enumerate(columns.models.names[: len(self.model_count)]):
            count = int(self.model_count[code])
            if count:
                average = int(self.model_duration_us[code]) / count / MICROS
                by_model[name] = {"count": count, "avg_duration": round(average, 1)}
        return {
            "success_rate": {
                "completed": completed,
                "failed": failed,
                "total": completed + failed,
                "rate": _ratio(completed, completed + failed),
            },
            "execution_time": execution_time,
            "by_task_type": by_task_type,
            "by_model": by_model,
        }
