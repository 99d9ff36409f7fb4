"""Aggregates over a rolling window, updated incrementally.

The columns are in time order, so a window (the records created in the last N days, up
to now) is a slice of them. Between two requests the slice moves at both ends: records
leave at the front as the clock moves, new ones enter at the back. Only those records
are applied to the counters and to sorted arrays of the window's durations and queue
waits, so a request costs O(changes + log n) for the counters and one memmove of each
sorted array when anything changed. Percentiles are read off the sorted arrays: exact
nearest-rank. Sums of tokens and cost are whole numbers (cost in nano-dollars), so they
are exact however the window moved.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from app.storage.metric_columns import LABEL_FIELDS, NANOS, UNKNOWN, RecordColumns
from app.storage.metric_records import MICROS

PERCENTILES = (50, 90, 95, 99)
DAY_MICROS = 86_400 * MICROS
TOKEN_TOTALS = ("input_tokens", "output_tokens", "cache_read_input_tokens",
                "cache_creation_input_tokens")
"""The token columns the window's usage sums."""
USAGE_COLUMNS = (*TOKEN_TOTALS, "cost_nanos")
BREAKDOWN_SUMS = ("cost_nanos", "input_tokens", "output_tokens")
"""The columns each breakdown of the window sums per label."""


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


def known_sum(total: int, known: int, scale: int = 1) -> float | int | None:
    """A sum over the records that know a field (``total / scale``); None when none do."""
    if not known:
        return None
    return total / scale if scale != 1 else total


class SortedValues:
    """A sorted int64 array that batches of values enter and leave."""

    def __init__(self) -> None:
        self.values = np.empty(0, np.int64)

    def __len__(self) -> int:
        return len(self.values)

    def change(self, values: np.ndarray, sign: int) -> None:
        """Insert ``values`` (``sign`` +1) or remove them (-1: each must be present)."""
        changed = np.sort(values)
        if sign > 0:
            self.values = np.insert(self.values, np.searchsorted(self.values, changed), changed)
        else:
            first_of_run = np.searchsorted(changed, changed, side="left")
            at = np.searchsorted(self.values, changed, side="left")
            at += np.arange(len(changed)) - first_of_run
            self.values = np.delete(self.values, at)

    def seconds(self, percent: int) -> float:
        return nearest_rank(self.values, percent) / MICROS


class LabelTotals:
    """Per code of one label column, over the window: completed and failed counts, the
    sum of durations, the sums of ``BREAKDOWN_SUMS`` with how many records know each,
    and (``with_durations``) each label's sorted durations."""

    def __init__(self, column: str, with_durations: bool = False) -> None:
        self.column = column
        self.completed = np.zeros(0, np.int64)
        self.failed = np.zeros(0, np.int64)
        self.duration_us = np.zeros(0, np.int64)
        self.sums = {name: np.zeros(0, np.int64) for name in BREAKDOWN_SUMS}
        self.known = {name: np.zeros(0, np.int64) for name in BREAKDOWN_SUMS}
        self.durations: dict[int, SortedValues] | None = {} if with_durations else None

    def names(self, columns: RecordColumns) -> list[str]:
        if self.column == "type_code":
            return columns.task_types.names
        if self.column == "model_code":
            return columns.models.names
        return columns.labels[self.column].names

    def apply(self, columns: RecordColumns, rows: slice, completed: np.ndarray,
              durations: np.ndarray, sign: int) -> None:
        codes = columns.column(self.column)[rows]
        labelled = codes != UNKNOWN
        if not labelled.all():
            codes, completed, durations = codes[labelled], completed[labelled], \
                durations[labelled]
        size = len(self.names(columns))
        self.completed = _grown(self.completed, size)
        self.failed = _grown(self.failed, size)
        self.duration_us = _grown(self.duration_us, size)
        self.completed += sign * np.bincount(codes[completed], minlength=size)
        self.failed += sign * np.bincount(codes[~completed], minlength=size)
        np.add.at(self.duration_us, codes, sign * durations)
        for name in BREAKDOWN_SUMS:
            values = columns.column(name)[rows][labelled]
            have = values != UNKNOWN
            self.sums[name] = _grown(self.sums[name], size)
            self.known[name] = _grown(self.known[name], size)
            self.known[name] += sign * np.bincount(codes[have], minlength=size)
            np.add.at(self.sums[name], codes[have], sign * values[have])
        if self.durations is not None and len(codes):
            order = np.argsort(codes, kind="stable")
            ordered_codes = codes[order]
            starts = np.flatnonzero(np.r_[True, ordered_codes[1:] != ordered_codes[:-1]])
            for first, last in zip(starts, np.r_[starts[1:], len(codes)]):
                code = int(ordered_codes[first])
                self.durations.setdefault(code, SortedValues()).change(
                    durations[order[first:last]], sign)

    def _sums(self, code: int) -> dict[str, Any]:
        return {
            "cost_usd": known_sum(int(self.sums["cost_nanos"][code]),
                                  int(self.known["cost_nanos"][code]), NANOS),
            "input_tokens": known_sum(int(self.sums["input_tokens"][code]),
                                      int(self.known["input_tokens"][code])),
            "output_tokens": known_sum(int(self.sums["output_tokens"][code]),
                                       int(self.known["output_tokens"][code])),
        }

    def breakdown(self, columns: RecordColumns, *, outcomes: bool = True,
                  durations: bool = False, tokens: bool = True) -> dict[str, dict[str, Any]]:
        """Per label with records in the window: ``count`` and, as asked, the outcomes
        (``completed``, ``failed``, ``success_rate``), the durations (``avg_duration``,
        and ``p50_seconds`` when kept), ``cost_usd`` and the token sums."""
        answer = {}
        for code, name in enumerate(self.names(columns)[: len(self.completed)]):
            done, lost = int(self.completed[code]), int(self.failed[code])
            if not done + lost:
                continue
            entry: dict[str, Any] = {"count": done + lost}
            if outcomes:
                entry.update(completed=done, failed=lost, success_rate=_ratio(done, done + lost))
            if durations and self.durations is not None:
                entry["p50_seconds"] = self.durations[code].seconds(50)
            if durations:
                average = int(self.duration_us[code]) / (done + lost) / MICROS
                entry["avg_duration"] = round(average, 1)
            sums = self._sums(code)
            entry.update(sums if tokens else {"cost_usd": sums["cost_usd"]})
            answer[name] = entry
        return answer


class WindowAggregate:
    def __init__(self) -> None:
        self.columns: RecordColumns | None = None
        self._reset(start=0)

    def _reset(self, start: int) -> None:
        self.generation = self.columns.generation if self.columns else -1
        self.start = self.end = start
        self.durations = SortedValues()
        self.waits = SortedValues()
        self.by_type = LabelTotals("type_code")
        self.by_model = LabelTotals("model_code")
        self.by_label = {name: LabelTotals(name, with_durations=True) for name in LABEL_FIELDS}
        self.with_usage = 0
        self.usage = dict.fromkeys(USAGE_COLUMNS, 0)
        self.usage_known = dict.fromkeys(USAGE_COLUMNS, 0)

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
        for totals in (self.by_type, self.by_model, *self.by_label.values()):
            totals.apply(columns, rows, completed, durations, sign)
        self.durations.change(durations, sign)
        waits = columns.column("wait_us")[rows]
        self.waits.change(waits[waits != UNKNOWN], sign)
        any_usage = np.zeros(len(durations), bool)
        for name in USAGE_COLUMNS:
            values = columns.column(name)[rows]
            have = values != UNKNOWN
            any_usage |= have
            self.usage_known[name] += sign * int(have.sum())
            self.usage[name] += sign * int(values[have].sum())
        self.with_usage += sign * int(any_usage.sum())

    def summary(self, columns: RecordColumns) -> dict[str, Any]:
        completed = int(self.by_type.completed.sum())
        failed = int(self.by_type.failed.sum())
        execution_time: dict[str, Any] = {
            f"p{percent}_seconds": self.durations.seconds(percent) for percent in PERCENTILES
        }
        execution_time["max_seconds"] = (
            int(self.durations.values[-1]) / MICROS if len(self.durations) else 0.0
        )
        execution_time["count"] = len(self.durations)
        cost = known_sum(self.usage["cost_nanos"], self.usage_known["cost_nanos"], NANOS)
        usage: dict[str, Any] = {"tasks_with_usage": self.with_usage}
        for name in TOKEN_TOTALS:
            usage[name] = known_sum(self.usage[name], self.usage_known[name])
        usage["cost_usd"] = cost
        usage["cost_per_completed_task"] = (
            round(self.usage["cost_nanos"] / completed / NANOS, 9)
            if cost is not None and completed else None)
        waited = bool(len(self.waits))
        labels = {
            f"by_{name}": totals.breakdown(columns, durations=True, tokens=False)
            for name, totals in self.by_label.items()
        }
        return {
            "success_rate": {
                "completed": completed,
                "failed": failed,
                "total": completed + failed,
                "rate": _ratio(completed, completed + failed),
            },
            "execution_time": execution_time,
            "by_task_type": self.by_type.breakdown(columns),
            "by_model": self.by_model.breakdown(columns, outcomes=False, durations=True),
            "usage": usage,
            "queue_wait": {
                "p50_seconds": self.waits.seconds(50) if waited else None,
                "p95_seconds": self.waits.seconds(95) if waited else None,
                "count": len(self.waits),
            },
            **labels,
        }
