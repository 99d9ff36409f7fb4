"""All-time totals of finished tasks, for counters that must never go down.

Per (task_type, model, status), an :class:`Entry`: how many records, the sum of their
durations and how many fall in each slot of the duration histogram; and, over the
records that hold them, the sums of each token count and of the cost, and the queue
waits (count, sum, histogram slots). Totals come from the records in the store, plus the
totals a compaction carried over for the records it dropped, so a Prometheus counter
built on them keeps counting across compactions.

Every amount is a whole number (microseconds, nano-dollars, tokens) summed as a Python
int, so sums are exact and the two ways of building totals (:meth:`Totals.add`, record
by record, and :meth:`Totals.from_columns`) give equal totals for the same records.
"""
from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.models.agent import TOKEN_FIELDS
from app.storage.metric_columns import AMOUNT_SCALES, UNKNOWN, RecordColumns
from app.storage.metric_records import MICROS, MetricRecord

log = logging.getLogger(__name__)

DURATION_BOUNDS_SECONDS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
"""Upper bounds of the duration histogram: agent tasks take from seconds to hours."""
BOUNDS_US = [round(bound * MICROS) for bound in DURATION_BOUNDS_SECONDS]
SLOTS = len(BOUNDS_US) + 1
"""One slot per bound (durations up to it) and a last one for longer durations."""

WAIT_BOUNDS_SECONDS = (0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)
"""Upper bounds of the queue-wait histogram (seconds a task waited before it ran).

Not the duration bounds: an idle service claims a task within a second, so the first
bounds split that sub-second case from a few seconds of polling; a backlog makes tasks
wait minutes to hours, so the bounds then go up like the durations' do, through 1 and
2 hours, and on to 6 hours for a queue left overnight (longer waits are in +Inf)."""
WAIT_BOUNDS_US = [round(bound * MICROS) for bound in WAIT_BOUNDS_SECONDS]
WAIT_SLOTS = len(WAIT_BOUNDS_US) + 1

COST_SCALE = AMOUNT_SCALES["cost_usd"][1]
"""Nano-dollars per dollar: costs are summed as whole nano-dollars."""
WAIT_SCALE = AMOUNT_SCALES["wait_seconds"][1]
INT64_MAX = 2 ** 63 - 1

Labels = tuple[str, str, str]


@dataclass
class Known:
    """An optional field over the records that hold it: how many do, and its sum in whole
    units (tokens, nano-dollars, microseconds)."""

    count: int = 0
    total: int = 0

    def plus(self, other: Known) -> Known:
        return Known(self.count + other.count, self.total + other.total)


def _zero_slots(slots: int) -> Callable[[], list[int]]:
    return lambda: [0] * slots


def _zero_tokens() -> dict[str, Known]:
    return {name: Known() for name in TOKEN_FIELDS}


def _add_lists(left: list[int], right: list[int]) -> list[int]:
    return [a + b for a, b in zip(left, right)]


@dataclass
class Entry:
    """The totals of the records of one (task_type, model, status)."""

    count: int = 0
    """How many records."""
    duration_us: int = 0
    """The sum of their durations."""
    slots: list[int] = field(default_factory=_zero_slots(SLOTS))
    """How many durations fall in each slot of ``BOUNDS_US``."""
    tokens: dict[str, Known] = field(default_factory=_zero_tokens)
    """Per token field of ``TOKEN_FIELDS`` (all of them, always)."""
    cost_nanos: Known = field(default_factory=Known)
    wait_us: Known = field(default_factory=Known)
    wait_slots: list[int] = field(default_factory=_zero_slots(WAIT_SLOTS))
    """How many of the known queue waits fall in each slot of ``WAIT_BOUNDS_US``."""

    def plus(self, other: Entry) -> Entry:
        """A new entry, the sum of both (neither is changed)."""
        return Entry(
            self.count + other.count,
            self.duration_us + other.duration_us,
            _add_lists(self.slots, other.slots),
            {name: self.tokens[name].plus(other.tokens[name]) for name in TOKEN_FIELDS},
            self.cost_nanos.plus(other.cost_nanos),
            self.wait_us.plus(other.wait_us),
            _add_lists(self.wait_slots, other.wait_slots),
        )

    def add(self, record: MetricRecord) -> None:
        self.count += 1
        self.duration_us += record.duration_us
        self.slots[bisect_left(BOUNDS_US, record.duration_us)] += 1
        optional = record.optional
        for name in TOKEN_FIELDS:
            if name in optional:
                self.tokens[name] = self.tokens[name].plus(Known(1, int(optional[name])))
        if "cost_usd" in optional:
            nanos = round(optional["cost_usd"] * COST_SCALE)
            self.cost_nanos = self.cost_nanos.plus(Known(1, nanos))
        if "wait_seconds" in optional:
            wait_us = round(optional["wait_seconds"] * WAIT_SCALE)
            self.wait_us = self.wait_us.plus(Known(1, wait_us))
            self.wait_slots[bisect_left(WAIT_BOUNDS_US, wait_us)] += 1

    def to_json(self) -> dict[str, Any]:
        """The entry's parts as JSON; an optional field no record held is left out."""
        data: dict[str, Any] = {"count": self.count, "duration_us": _json_int(self.duration_us),
                                "slots": list(self.slots)}
        tokens = {name: _known_json(known) for name, known in self.tokens.items()
                  if known.count}
        if tokens:
            data["tokens"] = tokens
        if self.cost_nanos.count:
            data["cost_nanos"] = _known_json(self.cost_nanos)
        if self.wait_us.count:
            data["wait_us"] = {**_known_json(self.wait_us), "slots": list(self.wait_slots)}
        return data

    @classmethod
    def from_json(cls, item: Mapping[str, Any]) -> Entry:
        """What :meth:`to_json` wrote, or a previous version (no tokens, cost or waits:
        zeros). Raises KeyError, TypeError or ValueError for anything else."""
        wait = item.get("wait_us") or {}
        return cls(
            int(item["count"]),
            int(item["duration_us"]),
            _slots(item["slots"], SLOTS),
            {name: _known(known) for name, known in _tokens_json(item.get("tokens") or {})},
            _known(item.get("cost_nanos") or {}),
            _known(wait),
            _slots(wait.get("slots", [0] * WAIT_SLOTS), WAIT_SLOTS),
        )


def _json_int(value: int) -> int | str:
    """A sum as JSON: a number while int64 holds it, else its digits (orjson writes no
    larger ints, and reads them as floats); :func:`int` reads either back exactly."""
    return value if -INT64_MAX <= value <= INT64_MAX else str(value)


def _known_json(known: Known) -> dict[str, Any]:
    return {"count": known.count, "sum": _json_int(known.total)}


def _known(data: Mapping[str, Any]) -> Known:
    if not isinstance(data, Mapping):
        raise TypeError("expected an object of count and sum")
    return Known(int(data.get("count", 0)), int(data.get("sum", 0)))


def _tokens_json(data: Mapping[str, Any]) -> Iterable[tuple[str, Mapping[str, Any]]]:
    if not isinstance(data, Mapping):
        raise TypeError("expected an object of token fields")
    return ((name, data.get(name) or {}) for name in TOKEN_FIELDS)


def _slots(data: Any, slots: int) -> list[int]:
    counts = [int(count) for count in data]
    if len(counts) != slots:
        raise ValueError("histogram slots do not match the bounds")
    return counts


def _groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ``keys`` (non-negative), in order, and the index among them of each
    key: by a lookup table when the keys span little more than their number (no sort),
    else by :func:`numpy.unique`."""
    span = int(keys.max()) + 1
    if span > 2 * len(keys) + 65_536:
        codes, group = np.unique(keys, return_inverse=True)
        return codes, group.reshape(-1)
    present = np.bincount(keys, minlength=span) > 0
    return np.flatnonzero(present), (np.cumsum(present) - 1)[keys]


def _group_sums(values: np.ndarray, group: np.ndarray, groups: int) -> list[int]:
    """Exact sums of the non-negative int64 ``values`` per group: in int64, or in Python
    ints if int64 could overflow (float weights would round sums past 2**53)."""
    exact = len(values) == 0 or int(values.max()) <= INT64_MAX // len(values)
    sums = np.zeros(groups, np.int64 if exact else object)
    np.add.at(sums, group, values if exact else values.astype(object))
    return [int(total) for total in sums]


def _known_sums(column: np.ndarray, group: np.ndarray, groups: int) -> list[Known]:
    """Per group, how many of ``column`` are known, and their sum (at once when none is:
    a store without usage makes no temporary arrays for it)."""
    known = column != UNKNOWN
    if not known.any():
        return [Known() for _ in range(groups)]
    counts = np.bincount(group[known], minlength=groups).tolist()
    sums = _group_sums(np.where(known, column, 0), group, groups)
    return [Known(count, total) for count, total in zip(counts, sums)]


def _slot_counts(values: np.ndarray, bounds: list[int], group: np.ndarray,
                 groups: int) -> list[list[int]]:
    """Per group, how many of ``values`` fall in each slot of ``bounds``."""
    slots = len(bounds) + 1
    slot = np.searchsorted(np.array(bounds, np.int64), values, side="left")
    counts = np.bincount(group * slots + slot, minlength=groups * slots)
    return counts.reshape(groups, slots).tolist()


@dataclass
class Totals:
    """``entries[(task_type, model, status)]``: the :class:`Entry` of those records."""

    entries: dict[Labels, Entry] = field(default_factory=dict)

    def add(self, record: MetricRecord) -> None:
        labels = (record.task_type, record.model,
                  "completed" if record.completed else "failed")
        self.entries.setdefault(labels, Entry()).add(record)

    def _add_entry(self, labels: Labels, entry: Entry) -> None:
        self.entries[labels] = self.entries.get(labels, Entry()).plus(entry)

    def merged(self, other: Totals) -> Totals:
        total = Totals()
        for totals in (self, other):
            for labels, entry in totals.entries.items():
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
    def from_columns(cls, columns: RecordColumns, start: int = 0,
                     stop: int | None = None) -> Totals:
        """The totals of the records in rows ``start`` to ``stop`` (None: the last) of the
        columns, in numpy (sums exact, see :func:`_group_sums`)."""
        stop = columns.size if stop is None else min(stop, columns.size)
        if stop <= start:
            return cls()

        def column(name: str) -> np.ndarray:
            return columns.column(name)[start:stop]

        keys = ((column("type_code").astype(np.int64) * len(columns.models)
                 + column("model_code")) * 2 + column("completed"))
        codes, group = _groups(keys)
        groups = len(codes)
        durations = column("duration_us")
        duration_sums = _group_sums(durations, group, groups)
        duration_slots = _slot_counts(durations, BOUNDS_US, group, groups)
        tokens = {name: _known_sums(column(name), group, groups) for name in TOKEN_FIELDS}
        costs = _known_sums(column("cost_nanos"), group, groups)
        waits = column("wait_us")
        wait_sums = _known_sums(waits, group, groups)
        known = waits != UNKNOWN
        wait_slots = _slot_counts(waits[known], WAIT_BOUNDS_US, group[known], groups)

        totals = cls()
        for row, code in enumerate(codes.tolist()):
            type_code, model_code = divmod(code // 2, len(columns.models))
            labels = (columns.task_types.names[type_code], columns.models.names[model_code],
                      "completed" if code % 2 else "failed")
            totals.entries[labels] = Entry(
                sum(duration_slots[row]), duration_sums[row], duration_slots[row],
                {name: sums[row] for name, sums in tokens.items()},
                costs[row], wait_sums[row], wait_slots[row],
            )
        return totals

    def to_json(self) -> list[dict[str, Any]]:
        return [
            {"task_type": labels[0], "model": labels[1], "status": labels[2],
             **entry.to_json()}
            for labels, entry in sorted(self.entries.items())
        ]

    @classmethod
    def from_json(cls, data: Any) -> Totals:
        """Totals written by :meth:`to_json` (of this version or the previous one, which
        kept no tokens, costs or waits); anything else is logged and read as none."""
        totals = cls()
        try:
            for item in data or []:
                totals.entries[(str(item["task_type"]), str(item["model"]),
                                str(item["status"]))] = Entry.from_json(item)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            log.error("ignoring unreadable carried-over totals: %s", exc)
            return cls()
        return totals


ROWS_AT_ONCE = 65_536
"""Rows summed at a time: the temporary arrays of a first count over a million rows stay
a few MB, rather than tens of MB that a gunicorn worker's allocator keeps afterwards."""


class RunningTotals:
    """The totals of a store's columns, kept from one call to the next: a call takes in
    only the rows appended since the last one, so a scrape of ``/metrics`` costs what
    changed rather than the whole store. Columns replaced (a store read afresh) or
    changed in place (a record inserted out of order bumps their generation) are summed
    again from the start."""

    def __init__(self) -> None:
        self._columns: RecordColumns | None = None
        self._generation = -1
        self._counted = 0
        self._totals = Totals()

    def of(self, columns: RecordColumns) -> Totals:
        if (columns is not self._columns or columns.generation != self._generation
                or columns.size < self._counted):
            self._columns, self._generation = columns, columns.generation
            self._counted, self._totals = 0, Totals()
        for start in range(self._counted, columns.size, ROWS_AT_ONCE):
            self._totals = self._totals.merged(
                Totals.from_columns(columns, start, start + ROWS_AT_ONCE))
        self._counted = columns.size
        return self._totals


@dataclass(frozen=True)
class DurationHistogram:
    """Durations of one (task_type, model): cumulative counts per upper bound (the last
    one is +Inf), and the sum of all durations."""

    task_type: str
    model: str
    cumulative_counts: list[int]
    sum_seconds: float


@dataclass(frozen=True)
class WaitHistogram:
    """Known queue waits of one task type: cumulative counts per upper bound of
    ``WAIT_BOUNDS_SECONDS`` (the last one is +Inf), and the sum of those waits."""

    task_type: str
    cumulative_counts: list[int]
    sum_seconds: float


def finished_counts(totals: Totals) -> dict[Labels, int]:
    """How many tasks finished per (task_type, model, status)."""
    return {labels: entry.count for labels, entry in totals.entries.items()}


def duration_histograms(totals: Totals) -> list[DurationHistogram]:
    """A cumulative histogram of durations per (task_type, model), statuses together."""
    pairs: dict[tuple[str, str], Entry] = {}
    for (task_type, model, _), entry in totals.entries.items():
        pairs[(task_type, model)] = pairs.get((task_type, model), Entry()).plus(entry)
    return [
        DurationHistogram(task_type, model, np.cumsum(entry.slots).tolist(),
                          entry.duration_us / MICROS)
        for (task_type, model), entry in sorted(pairs.items())
    ]


def token_sums(totals: Totals) -> dict[tuple[str, str, str], int]:
    """Per (task_type, model, token field), the sum of the known token counts; only
    where some record held that field."""
    sums: dict[tuple[str, str, str], Known] = {}
    for (task_type, model, _), entry in totals.entries.items():
        for name, known in entry.tokens.items():
            if known.count:
                key = (task_type, model, name)
                sums[key] = sums.get(key, Known()).plus(known)
    return {key: known.total for key, known in sorted(sums.items())}


def cost_nanos(totals: Totals) -> dict[tuple[str, str], int]:
    """Per (task_type, model), the sum of the known costs in nano-dollars; only where
    some record held a cost."""
    sums: dict[tuple[str, str], Known] = {}
    for (task_type, model, _), entry in totals.entries.items():
        if entry.cost_nanos.count:
            sums[(task_type, model)] = sums.get((task_type, model), Known()).plus(
                entry.cost_nanos)
    return {key: known.total for key, known in sorted(sums.items())}


def wait_histograms(totals: Totals) -> list[WaitHistogram]:
    """A cumulative histogram of the known queue waits per task type (models and
    statuses together); only task types with some known wait."""
    per_type: dict[str, Entry] = {}
    for (task_type, _, _), entry in totals.entries.items():
        if entry.wait_us.count:
            per_type[task_type] = per_type.get(task_type, Entry()).plus(entry)
    return [
        WaitHistogram(task_type, np.cumsum(entry.wait_slots).tolist(),
                      entry.wait_us.total / MICROS)
        for task_type, entry in sorted(per_type.items())
    ]
