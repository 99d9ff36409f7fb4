"""All-time totals of finished tasks, for counters that must never go down.

Per (task_type, model, status): how many records, the sum of their durations, and how
many fall in each slot of the duration histogram. Totals come from the records in the
store, plus the totals a compaction carried over for the records it dropped, so a
Prometheus counter built on them keeps counting across compactions.
"""
from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.storage.metric_columns import RecordColumns
from app.storage.metric_records import MICROS, MetricRecord

log = logging.getLogger(__name__)

DURATION_BOUNDS_SECONDS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
"""Upper bounds of the duration histogram: agent tasks take from seconds to hours."""
BOUNDS_US = [round(bound * MICROS) for bound in DURATION_BOUNDS_SECONDS]
SLOTS = len(BOUNDS_US) + 1
"""One slot per bound (durations up to it) and a last one for longer durations."""

Labels = tuple[str, str, str]


@dataclass
class Totals:
    """``entries[(task_type, model, status)] = [count, duration sum in µs, *slot counts]``."""

    entries: dict[Labels, list[int]] = field(default_factory=dict)

    def _entry(self, labels: Labels) -> list[int]:
        return self.entries.setdefault(labels, [0] * (2 + SLOTS))

    def add(self, record: MetricRecord) -> None:
        entry = self._entry((record.task_type, record.model,
                             "completed" if record.completed else "failed"))
        entry[0] += 1
        entry[1] += record.duration_us
        entry[2 + bisect_left(BOUNDS_US, record.duration_us)] += 1

    def _add_entry(self, labels: Labels, entry: list[int]) -> None:
        mine = self._entry(labels)
        mine[:] = [a + b for a, b in zip(mine, entry)]

    def merged(self, other: Totals) -> Totals:
        total = Totals({labels: list(entry) for labels, entry in self.entries.items()})
        for labels, entry in other.entries.items():
            total._add_entry(labels, entry)
        return total

    def relabeled(self, label: Callable[[Labels], Labels]) -> Totals:
        """The totals with each entry's labels replaced by ``label(labels)``; entries
        that get the same labels are summed."""
        total = Totals()
        for labels, entry in self.entries.items():
            total._add_entry(label(labels), entry)
        return total

    @classmethod
    def from_columns(cls, columns: RecordColumns) -> Totals:
        """The totals of every record in the columns (one numpy pass)."""
        durations = columns.column("duration_us")
        keys = ((columns.column("type_code").astype(np.int64) * len(columns.models)
                 + columns.column("model_code")) * 2 + columns.column("completed"))
        codes, inverse = np.unique(keys, return_inverse=True)
        inverse = inverse.reshape(-1)
        slots = np.searchsorted(np.array(BOUNDS_US, np.int64), durations, side="left")
        slot_counts = np.bincount(inverse * SLOTS + slots, minlength=len(codes) * SLOTS)
        sums = np.zeros(len(codes), np.int64)
        np.add.at(sums, inverse, durations)
        totals = cls()
        for row, code in enumerate(codes.tolist()):
            type_code, model_code = divmod(code // 2, len(columns.models))
            labels = (columns.task_types.names[type_code], columns.models.names[model_code],
                      "completed" if code % 2 else "failed")
            row_slots = slot_counts[row * SLOTS:(row + 1) * SLOTS].tolist()
            totals.entries[labels] = [sum(row_slots), int(sums[row]), *row_slots]
        return totals

    def to_json(self) -> list[dict[str, Any]]:
        return [
            {"task_type": labels[0], "model": labels[1], "status": labels[2],
             "count": entry[0], "duration_us": entry[1], "slots": entry[2:]}
            for labels, entry in sorted(self.entries.items())
        ]

    @classmethod
    def from_json(cls, data: Any) -> Totals:
        """Totals written by :meth:`to_json`; anything else is logged and read as none."""
        totals = cls()
        try:
            for item in data or []:
                slots = [int(count) for count in item["slots"]]
                if len(slots) != SLOTS:
                    raise ValueError("histogram slots do not match the bounds")
                totals.entries[(str(item["task_type"]), str(item["model"]),
                                str(item["status"]))] = [
                    int(item["count"]), int(item["duration_us"]), *slots]
        except (KeyError, TypeError, ValueError) as exc:
            log.error("ignoring unreadable carried-over totals: %s", exc)
            return cls()
        return totals


@dataclass(frozen=True)
class DurationHistogram:
    """Durations of one (task_type, model): cumulative counts per upper bound (the last
    one is +Inf), and the sum of all durations."""

    task_type: str
    model: str
    cumulative_counts: list[int]
    sum_seconds: float


def finished_counts(totals: Totals) -> dict[Labels, int]:
    """How many tasks finished per (task_type, model, status)."""
    return {labels: entry[0] for labels, entry in totals.entries.items()}


def duration_histograms(totals: Totals) -> list[DurationHistogram]:
    """A cumulative histogram of durations per (task_type, model), statuses together."""
    pairs: dict[tuple[str, str], list[int]] = {}
    for (task_type, model, _), entry in totals.entries.items():
        pair = pairs.setdefault((task_type, model), [0] * (1 + SLOTS))
        pair[:] = [a + b for a, b in zip(pair, entry[1:])]
    return [
        DurationHistogram(task_type, model, np.cumsum(pair[1:]).tolist(), pair[0] / MICROS)
        for (task_type, model), pair in sorted(pairs.items())
    ]
