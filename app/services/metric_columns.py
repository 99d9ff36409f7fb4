"""Compact in-memory columns for metric records, kept in ``created_at`` order.

A million records take about 25 MB here (five numpy columns) instead of a million dicts.
Records normally arrive in time order and are appended at the end; one that arrives out
of order is inserted in its place and bumps ``generation`` so windowed aggregates know
to rebuild instead of updating incrementally.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INITIAL_CAPACITY = 1024


@dataclass(frozen=True)
class MetricRecord:
    """One decoded record; times and durations in whole microseconds."""

    task_id: str
    task_type: str
    model: str
    completed: bool
    duration_us: int
    created_us: int


class Labels:
    """Interns label strings (task types, models) as small integer codes."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._codes: dict[str, int] = {}

    def code(self, name: str) -> int:
        code = self._codes.get(name)
        if code is None:
            code = self._codes[name] = len(self.names)
            self.names.append(name)
        return code

    def __len__(self) -> int:
        return len(self.names)


COLUMN_TYPES = {
    "created_us": np.int64,
    "duration_us": np.int64,
    "completed": np.int8,
    "type_code": np.int32,
    "model_code": np.int32,
}


class RecordColumns:
    def __init__(self) -> None:
        self.task_types = Labels()
        self.models = Labels()
        self.size = 0
        self.generation = 0
        self._data = {
            name: np.empty(INITIAL_CAPACITY, dtype) for name, dtype in COLUMN_TYPES.items()
        }

    def column(self, name: str) -> np.ndarray:
        """A view of one column's filled part."""
        return self._data[name][: self.size]

    def add(self, records: list[MetricRecord]) -> None:
        if not records:
            return
        rows = {
            "created_us": np.fromiter((r.created_us for r in records), np.int64, len(records)),
            "duration_us": np.fromiter((r.duration_us for r in records), np.int64, len(records)),
            "completed": np.fromiter((r.completed for r in records), np.int8, len(records)),
            "type_code": np.fromiter(
                (self.task_types.code(r.task_type) for r in records), np.int32, len(records)
            ),
            "model_code": np.fromiter(
                (self.models.code(r.model) for r in records), np.int32, len(records)
            ),
        }
        order = np.argsort(rows["created_us"], kind="stable")
        rows = {name: values[order] for name, values in rows.items()}
        if self.size and rows["created_us"][0] < self._data["created_us"][self.size - 1]:
            self._insert(rows)
        else:
            self._append(rows)

    def _append(self, rows: dict[str, np.ndarray]) -> None:
        count = len(rows["created_us"])
        self._reserve(self.size + count)
        for name, values in rows.items():
            self._data[name][self.size: self.size + count] = values
        self.size += count

    def _insert(self, rows: dict[str, np.ndarray]) -> None:
        positions = np.searchsorted(self.column("created_us"), rows["created_us"], side="right")
        merged = {name: np.insert(self.column(name), positions, rows[name]) for name in rows}
        self.size = len(merged["created_us"])
        self._data = merged
        self._reserve(self.size + 1)
        self.generation += 1

    def _reserve(self, needed: int) -> None:
        capacity = len(self._data["created_us"])
        if needed <= capacity:
            return
        while capacity < needed:
            capacity *= 2
        for name, values in self._data.items():
            grown = np.empty(capacity, values.dtype)
            grown[: self.size] = values[: self.size]
            self._data[name] = grown
