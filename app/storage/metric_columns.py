"""Compact in-memory columns for metric records, kept in ``created_at`` order.

A million records take about 25 MB here (five numpy columns) instead of a million dicts.
Records normally arrive in time order and are appended at the end; one that arrives out
of order is inserted in its place and bumps ``generation`` so windowed aggregates know
to rebuild instead of updating incrementally.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from app.storage.metric_records import RecordBatch

INITIAL_CAPACITY = 1024


class Labels:
    """Interns label strings (task types, models) as small integer codes."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._codes: dict[str, int] = {}

    def codes(self, names: list[str]) -> np.ndarray:
        for name in set(names) - self._codes.keys():
            self._codes[name] = len(self.names)
            self.names.append(name)
        return np.fromiter(map(self._codes.__getitem__, names), np.int32, len(names))

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def restored(cls, names: list[str]) -> Labels:
        labels = cls()
        labels.names = [str(name) for name in names]
        labels._codes = {name: code for code, name in enumerate(labels.names)}
        if len(labels._codes) != len(labels.names):
            raise ValueError("repeated label names")
        return labels


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

    def saved(self) -> tuple[dict[str, np.ndarray], dict[str, object]]:
        """The columns and their labels, as a checkpoint keeps them."""
        return ({name: self.column(name) for name in COLUMN_TYPES},
                {"task_types": self.task_types.names, "models": self.models.names,
                 "generation": self.generation})

    @classmethod
    def restored(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> RecordColumns:
        """Columns from what :meth:`saved` gave."""
        columns = cls()
        sizes = {len(arrays[name]) for name in COLUMN_TYPES}
        if len(sizes) != 1:
            raise ValueError("columns of different lengths")
        columns.task_types = Labels.restored(meta["task_types"])
        columns.models = Labels.restored(meta["models"])
        columns.generation = int(meta["generation"])
        columns._reserve(sizes.pop())
        columns.size = len(arrays["created_us"])
        for name, dtype in COLUMN_TYPES.items():
            columns._data[name][: columns.size] = arrays[name].astype(dtype, copy=False)
        return columns

    def column(self, name: str) -> np.ndarray:
        """A view of one column's filled part."""
        return self._data[name][: self.size]

    def add(self, batch: RecordBatch) -> None:
        if not len(batch):
            return
        rows = {
            "created_us": batch.created_us,
            "duration_us": batch.duration_us,
            "completed": batch.completed.astype(np.int8),
            "type_code": self.task_types.codes(batch.task_types),
            "model_code": self.models.codes(batch.models),
        }
        if (np.diff(batch.created_us) < 0).any():
            order = np.argsort(batch.created_us, kind="stable")
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
