"""Compact in-memory columns for metric records, kept in ``created_at`` order.

A million records take 25 MB here for the five seed columns instead of a million dicts,
and up to 64 MB more for the optional fields. An optional field's column is only
allocated once a record holds it (until then it reads as all ``UNKNOWN``), so a store
of records without usage costs no more than before. A field a record lacks is
``UNKNOWN`` in its column; amounts are whole microseconds (``wait_us``) and
nano-dollars (``cost_nanos``), so sums over them are exact.
Records normally arrive in time order and are appended at the end; one that arrives out
of order is inserted in its place and bumps ``generation`` so windowed aggregates know
to rebuild instead of updating incrementally.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from app.models.agent import TOKEN_FIELDS
from app.storage.metric_records import MICROS, RecordBatch

INITIAL_CAPACITY = 1024
UNKNOWN = -1
"""What an optional field's column holds for a record that lacks it."""


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

    def code(self, name: str) -> int:
        """The code of ``name``; UNKNOWN, which no record holds, if it has none."""
        return self._codes.get(name, UNKNOWN)

    @classmethod
    def restored(cls, names: list[str]) -> Labels:
        labels = cls()
        labels.names = [str(name) for name in names]
        labels._codes = {name: code for code, name in enumerate(labels.names)}
        if len(labels._codes) != len(labels.names):
            raise ValueError("repeated label names")
        return labels


NANOS = 1_000_000_000
"""Nano-dollars per dollar."""
LABEL_FIELDS = ("prompt_variant", "skill_version", "executor")
"""Optional fields holding labels; their columns hold codes of their :class:`Labels`."""
AMOUNT_SCALES = {"wait_seconds": ("wait_us", MICROS), "cost_usd": ("cost_nanos", NANOS)}
"""The optional fields kept as whole units: their column and its units per field unit."""
TOKEN_COLUMNS = TOKEN_FIELDS
OPTIONAL_COLUMN_TYPES = {
    "attempts": np.int32,
    "wait_us": np.int64,
    **{name: np.int64 for name in TOKEN_COLUMNS},
    "cost_nanos": np.int64,
    **{name: np.int32 for name in LABEL_FIELDS},
}
SEED_COLUMN_TYPES = {
    "created_us": np.int64,
    "duration_us": np.int64,
    "completed": np.int8,
    "type_code": np.int32,
    "model_code": np.int32,
}
COLUMN_TYPES = {**SEED_COLUMN_TYPES, **OPTIONAL_COLUMN_TYPES}


def column_name(field: str) -> str:
    """The column an optional field is kept in."""
    return AMOUNT_SCALES[field][0] if field in AMOUNT_SCALES else field


class RecordColumns:
    def __init__(self) -> None:
        self.task_types = Labels()
        self.models = Labels()
        self.labels = {name: Labels() for name in LABEL_FIELDS}
        """The labels of each of ``LABEL_FIELDS``."""
        self.size = 0
        self.generation = 0
        self._data = {
            name: np.empty(INITIAL_CAPACITY, dtype) for name, dtype in SEED_COLUMN_TYPES.items()
        }

    def saved(self) -> tuple[dict[str, np.ndarray], dict[str, object]]:
        """The columns held and their labels, as a checkpoint keeps them."""
        return ({name: self.column(name) for name in self._data},
                {"task_types": self.task_types.names, "models": self.models.names,
                 "labels": {name: labels.names for name, labels in self.labels.items()},
                 "generation": self.generation})

    @classmethod
    def restored(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> RecordColumns:
        """Columns from what :meth:`saved` gave."""
        columns = cls()
        held = [name for name in COLUMN_TYPES if name in arrays]
        sizes = {len(arrays[name]) for name in held}
        if len(sizes) != 1 or not set(SEED_COLUMN_TYPES) <= set(held):
            raise ValueError("columns of different lengths")
        columns.task_types = Labels.restored(meta["task_types"])
        columns.models = Labels.restored(meta["models"])
        columns.labels = {name: Labels.restored(meta["labels"][name]) for name in LABEL_FIELDS}
        columns.generation = int(meta["generation"])
        columns._reserve(sizes.pop())
        columns.size = len(arrays["created_us"])
        for name in held:
            columns._hold(name)
            columns._data[name][: columns.size] = arrays[name]
        return columns

    def column(self, name: str) -> np.ndarray:
        """A view of one column's filled part (read-only and all UNKNOWN for an optional
        field no record holds)."""
        if name not in self._data:
            return np.broadcast_to(np.array(UNKNOWN, OPTIONAL_COLUMN_TYPES[name]), self.size)
        return self._data[name][: self.size]

    def _hold(self, name: str) -> None:
        """Allocate the column of an optional field, all UNKNOWN so far."""
        if name not in self._data:
            capacity = len(self._data["created_us"])
            self._data[name] = np.full(capacity, UNKNOWN, OPTIONAL_COLUMN_TYPES[name])

    def add(self, batch: RecordBatch) -> None:
        if not len(batch):
            return
        rows = {
            "created_us": batch.created_us,
            "duration_us": batch.duration_us,
            "completed": batch.completed.astype(np.int8),
            "type_code": self.task_types.codes(batch.task_types),
            "model_code": self.models.codes(batch.models),
            **self._optional_columns(batch),
        }
        for name in rows.keys() - self._data.keys():
            self._hold(name)
        for name in self._data.keys() - rows.keys():
            rows[name] = np.full(len(batch), UNKNOWN, self._data[name].dtype)
        if (np.diff(batch.created_us) < 0).any():
            order = np.argsort(batch.created_us, kind="stable")
            rows = {name: values[order] for name, values in rows.items()}
        if self.size and rows["created_us"][0] < self._data["created_us"][self.size - 1]:
            self._insert(rows)
        else:
            self._append(rows)

    def _optional_columns(self, batch: RecordBatch) -> dict[str, np.ndarray]:
        """The columns of the optional fields that some record of the batch holds."""
        rows: dict[str, np.ndarray] = {}
        for field, values in batch.optional.items():
            known = [index for index, value in enumerate(values) if value is not None]
            present = [values[index] for index in known]
            if field in LABEL_FIELDS:
                codes = self.labels[field].codes(present)
            elif field in AMOUNT_SCALES:
                scale = AMOUNT_SCALES[field][1]
                codes = np.array([round(value * scale) for value in present], np.int64)
            else:
                codes = np.array(present, np.int64)
            name = column_name(field)
            rows[name] = np.full(len(batch), UNKNOWN, OPTIONAL_COLUMN_TYPES[name])
            rows[name][known] = codes
        return rows

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
