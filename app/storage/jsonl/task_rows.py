"""What the JSONL task store keeps in memory of each task: what listing, counting,
claiming and transitions look at, never a direction, an output or a context.

Each task is a row, numbered in the order tasks first appear in the file, holding codes
of its status, task type and model, its priority, ``updated_at`` and ``run_after`` in
microseconds, the first 8 bytes of its id and the chain of its lines in the file (each
line's offset and the line of the same task before it). Its whole state is read back
from those lines when a response needs it. Rows are kept in ``created_at`` order (then
id) in one array, and the positions of pending tasks in a sorted array of their own, so
a claim or a list of pending tasks never looks at final ones (a claim weighs the pending
tasks' priorities, delays and models in one numpy pass over them). Running tasks under a
lease and final tasks whose metric record is not written are few; they are kept in a
dict and a set.

A line read from the file is taken as a line of a known task when the 64-bit hash of
its id and the id's first 8 bytes match that task's (no file read per line); a lookup by
id (a request) also checks the id against the task's first line.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import numpy as np

from app.clock import parse_iso
from app.models.agent import STATUSES, TASK_TYPES
from app.storage.jsonl.hash_runs import HashRuns, hash_key, hash_keys
from app.storage.jsonl.leases import Leases
from app.storage.jsonl.pending_columns import CLAIM_COLUMNS, PendingColumns
from app.storage.metric_records import to_micros
from app.storage.stores import Task

LineAt = Callable[[int], "dict[str, Any] | None"]

STATUS_CODES = {status: code for code, status in enumerate(STATUSES)}
TYPE_CODES = {task_type: code for code, task_type in enumerate(TASK_TYPES)}
PENDING, RUNNING = STATUS_CODES["pending"], STATUS_CODES["running"]
LEASE_FIELDS = ("runner_id", "lease_expires_at")
UNSTORED_FIELDS = ("command",)
"""Fields that lines of earlier versions stored and that are now derived when read."""


def _is_time(value: Any) -> bool:
    try:
        parse_iso(value)
    except (TypeError, ValueError):
        return False
    return True


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


FIELD_CHECKS: dict[str, Callable[[Any], bool]] = {
    "status": lambda value: isinstance(value, str) and value in STATUS_CODES,
    "task_type": lambda value: isinstance(value, str) and value in TYPE_CODES,
    "id": _is_text,
    "direction": _is_text,
    "model": _is_text,
    "created_at": _is_time,
    "updated_at": _is_time,
    "started_at": lambda value: value is None or _is_time(value),
    "lease_expires_at": lambda value: value is None or _is_time(value),
    "run_after": lambda value: value is None or _is_time(value),
    "priority": lambda value: type(value) is int and -2**31 <= value < 2**31,
    "context": lambda value: isinstance(value, dict),
}
REQUIRED_FIELDS = tuple(name for name in FIELD_CHECKS
                        if name not in ("started_at", "lease_expires_at", "run_after",
                                        "priority"))


def is_task_change(line: dict[str, Any]) -> bool:
    """Whether the fields a stored line sets are usable: laid over a usable task state,
    it leaves one."""
    for name, value in line.items():
        check = FIELD_CHECKS.get(name)
        if check is not None and not check(value):
            return False
    return True


def is_task_state(state: dict[str, Any]) -> bool:
    """Whether a stored line is a whole task state the service can use (a line written
    by hand or damaged may lack fields, or hold values, that listing, transitions and
    metric records rely on)."""
    return all(name in state for name in REQUIRED_FIELDS) and is_task_change(state)


def merged_state(previous: Task | None, line: dict[str, Any]) -> Task | None:
    """The task state a stored line leaves, laid over the task's state so far (None:
    the task's first line); None if that is no usable state (the line is skipped)."""
    if previous is not None:
        return {**previous, **_stored(line)} if is_task_change(line) else None
    state = _stored(line)
    return state if is_task_state(state) else None


def _stored(line: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in line.items() if name not in UNSTORED_FIELDS}


def micros(stamp: str) -> int:
    return to_micros(parse_iso(stamp))


def run_after_micros(stamp: str | None) -> int:
    """``run_after`` in microseconds; 0 (long past) when there is none."""
    return 0 if stamp is None else micros(stamp)


def id_prefix(task_id: str) -> int:
    """The id's first 8 bytes (UTF-8, zero-padded) as a number that sorts as they do."""
    return int.from_bytes(task_id[:8].encode("utf-8", "surrogatepass")[:8].ljust(8, b"\0"),
                          "big")


class Column:
    """A numpy array that grows by doubling; :attr:`values` is the filled part."""

    def __init__(self, dtype: type) -> None:
        self._data: np.ndarray = np.empty(1024, dtype)
        self.size = 0

    @property
    def values(self) -> np.ndarray:
        return self._data[: self.size]

    def extend(self, values: Iterable[Any] | np.ndarray) -> None:
        values = np.asarray(values, self._data.dtype)
        needed = self.size + len(values)
        if needed > len(self._data):
            grown = np.empty(max(needed, 2 * len(self._data)), self._data.dtype)
            grown[: self.size] = self.values
            self._data = grown
        self._data[self.size: needed] = values
        self.size = needed

    def insert(self, at: np.ndarray, values: np.ndarray) -> None:
        """Insert ``values`` before the indexes ``at`` (as :func:`numpy.insert`)."""
        inserted = np.insert(self.values, at, values)
        self._data, self.size = inserted, len(inserted)

    def delete(self, index: int) -> None:
        self._data[index: self.size - 1] = self._data[index + 1: self.size]
        self.size -= 1


class TaskRows:
    def __init__(self, line_at: LineAt) -> None:
        """``line_at(offset)`` reads the stored line at that offset of the file."""
        self._line_at = line_at
        self.status = Column(np.int8)
        self.task_type = Column(np.int8)
        self.model = Column(np.int32)
        """Codes of :attr:`models`."""
        self.priority = Column(np.int32)
        self.run_after_us = Column(np.int64)
        self.updated_us = Column(np.int64)
        self.prefix = Column(np.uint64)
        self.last_line = Column(np.int32)
        self.position = Column(np.int32)
        """Each row's place in :attr:`order`; -1 until it is placed."""
        self.line_offset = Column(np.int64)
        self.line_before = Column(np.int32)
        self.order = Column(np.int32)
        """Rows in claim order: ``created_at``, then id."""
        self.order_created = Column(np.int64)
        """``created_at`` (microseconds) of each row of :attr:`order`, in that order."""
        self.pending = np.empty(0, np.int64)
        """Sorted positions in :attr:`order` of the pending tasks."""
        self._claim_columns = PendingColumns()
        self.leases = Leases()
        """Running tasks under a lease: their runner_id and lease_expires_at."""
        self.unrecorded: set[int] = set()
        """Final tasks whose metric record is not known to be written yet."""
        self.models: list[str] = []
        self._model_codes: dict[str, int] = {}
        self._rows = HashRuns()
        self._unplaced: dict[int, int] = {}
        """``created_at`` of rows made by the batch being taken, placed at its end."""

    def __len__(self) -> int:
        return self.status.size

    ROW_COLUMNS = ("status", "task_type", "model", "priority", "run_after_us", "updated_us",
                   "prefix", "last_line", "position")
    LINE_COLUMNS = ("line_offset", "line_before")
    ORDER_COLUMNS = ("order", "order_created")

    def saved(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """What a checkpoint keeps of the rows: arrays, and the leases."""
        keys, rows = self._rows.saved()
        arrays = {name: getattr(self, name).values
                  for name in (*self.ROW_COLUMNS, *self.LINE_COLUMNS, *self.ORDER_COLUMNS)}
        arrays.update({"pending": self.pending, "rows.keys": keys, "rows.values": rows,
                       "unrecorded": np.array(sorted(self.unrecorded), np.int64)})
        leases = [[row, lease["runner_id"], lease["lease_expires_at"]]
                  for row, lease in self.leases.items()]
        return arrays, {"leases": leases, "models": self.models}

    @classmethod
    def restored(cls, line_at: LineAt, arrays: dict[str, np.ndarray], meta: dict[str, Any]
                 ) -> TaskRows:
        """Rows from what :meth:`saved` gave."""
        rows = cls(line_at)
        for names in (cls.ROW_COLUMNS, cls.LINE_COLUMNS, cls.ORDER_COLUMNS):
            if len({len(arrays[name]) for name in names}) != 1:
                raise ValueError("columns of different lengths")
            for name in names:
                getattr(rows, name).extend(arrays[name])
        if rows.order.size != len(rows):
            raise ValueError("claim order does not hold every row")
        rows.pending = arrays["pending"].astype(np.int64)
        rows._rows = HashRuns.restored(arrays["rows.keys"], arrays["rows.values"])
        rows.unrecorded = set(arrays["unrecorded"].tolist())
        for model in meta["models"]:
            rows.model_code(model)
        for row, runner_id, expires in meta["leases"]:
            rows._lease(int(row), {"runner_id": runner_id, "lease_expires_at": expires})
        rows.leases.file_models(list(rows.leases), rows.model.values)
        return rows

    # -- reading back ----------------------------------------------------------------

    def state(self, row: int) -> Task:
        """The row's task state: its lines laid over each other in file order."""
        offsets = []
        line = int(self.last_line.values[row])
        while line >= 0:
            offsets.append(int(self.line_offset.values[line]))
            line = int(self.line_before.values[line])
        state: Task = {}
        for offset in reversed(offsets):
            state.update(_stored(self._line_at(offset) or {}))
        return state

    def row_of(self, task_id: str) -> int | None:
        """The task's row, its id checked against the task's first line."""
        prefix = id_prefix(task_id)
        rows = [row for row in self._rows.values_of(hash_key(task_id))
                if int(self.prefix.values[row]) == prefix and self._first_id(row) == task_id]
        return rows[0] if rows else None

    def _first_id(self, row: int) -> Any:
        """The id on the task's first line (one line read, not the whole state)."""
        line = int(self.last_line.values[row])
        while self.line_before.values[line] >= 0:
            line = int(self.line_before.values[line])
        return (self._line_at(int(self.line_offset.values[line])) or {}).get("id")

    def _known_rows(self, task_ids: list[str]) -> np.ndarray:
        """The row of each id (-1 for ids not seen before)."""
        keys = hash_keys(task_ids)
        found = self._rows.only_values(keys)
        prefixes = np.fromiter(map(id_prefix, task_ids), np.uint64, len(task_ids))
        hit = found >= 0
        found[hit] = np.where(self.prefix.values[found[hit]] == prefixes[hit], found[hit], -1)
        for i in np.flatnonzero(found == -2).tolist():
            row = self.row_of(task_ids[i])
            found[i] = -1 if row is None else row
        return found

    # -- taking lines in ---------------------------------------------------------------

    def take(self, lines: list[tuple[int, dict[str, Any]]]) -> None:
        """Take in lines read from the file, in file order; lines that are no usable
        task state (or change of one) are skipped. The batch's changes are gathered in
        plain Python first and written to the columns at its end, in one go."""
        lines = [(offset, line) for offset, line in lines if _is_text(line.get("id"))]
        known = self._known_rows([line["id"] for _, line in lines])
        batch = _Batch(len(self), self.line_offset.size)
        for (offset, line), row in zip(lines, known.tolist()):
            task_id = line["id"]
            row = batch.made.get(task_id, row)
            if row >= 0:
                if is_task_change(line):
                    self._change(batch, row, line, offset)
                continue
            state = merged_state(None, line)
            if state is not None:
                row = batch.make(task_id, state, offset, self.model_code(state["model"]))
                self._track(batch, row, state, whole=True)
        self._write(batch)

    def model_code(self, model: str) -> int:
        """The code of ``model`` in :attr:`model` (a new one for a model not seen)."""
        code = self._model_codes.get(model)
        if code is None:
            code = self._model_codes[model] = len(self.models)
            self.models.append(model)
        return code

    def _status_of(self, batch: _Batch, row: int) -> int:
        status = batch.status.get(row)
        return int(self.status.values[row]) if status is None else status

    def _change(self, batch: _Batch, row: int, line: dict[str, Any], offset: int) -> None:
        before = batch.last.get(row)
        batch.add_line(row, offset, int(self.last_line.values[row]) if before is None else before)
        if "status" in line:
            batch.status[row] = STATUS_CODES[line["status"]]
        if "task_type" in line:
            batch.task_type[row] = TYPE_CODES[line["task_type"]]
        if "model" in line:
            batch.model[row] = self.model_code(line["model"])
        if "priority" in line:
            batch.priority[row] = line["priority"]
        if "run_after" in line:
            batch.run_after[row] = run_after_micros(line["run_after"])
        if "updated_at" in line:
            batch.updated[row] = micros(line["updated_at"])
        if "created_at" in line:
            batch.created[row] = micros(line["created_at"])
        self._track(batch, row, line, whole=False)

    def _track(self, batch: _Batch, row: int, fields: dict[str, Any], whole: bool) -> None:
        """Keep the row's place among the unrecorded and the leased tasks."""
        if "recorded" in fields:
            if fields["recorded"] is False:
                self.unrecorded.add(row)
            else:
                self.unrecorded.discard(row)
        if self._status_of(batch, row) != RUNNING:
            self.leases.release(row)
            batch.unsure.discard(row)
            return
        held = self.leases.get(row)
        if held is None and not whole and row not in batch.unsure:
            if not any(name in fields for name in ("status", *LEASE_FIELDS)):
                return
            if not all(name in fields for name in LEASE_FIELDS):
                batch.unsure.add(row)  # a line written by hand: read the whole task later
                return
        self._lease(row, {name: fields[name] if name in fields else (held or {}).get(name)
                          for name in LEASE_FIELDS})

    def _lease(self, row: int, fields: dict[str, Any]) -> None:
        """Hold the row as leased if ``fields`` give it a lease."""
        expires = fields.get("lease_expires_at")
        if expires is None:
            self.leases.release(row)
        else:
            self.leases.hold(row, fields.get("runner_id"), expires)

    def _write(self, batch: _Batch) -> None:
        """Write a batch's rows and changes to the columns."""
        made = range(batch.first_row, batch.first_row + len(batch.made))
        self.status.extend([batch.status.pop(row) for row in made])
        self.task_type.extend([batch.task_type.pop(row) for row in made])
        self.model.extend([batch.model.pop(row) for row in made])
        self.priority.extend([batch.priority.pop(row) for row in made])
        self.run_after_us.extend([batch.run_after.pop(row) for row in made])
        self.updated_us.extend([batch.updated.pop(row) for row in made])
        self.prefix.extend(batch.prefixes)
        self.last_line.extend([batch.last.pop(row) for row in made])
        self.position.extend(np.full(len(made), -1, np.int32))
        self.line_offset.extend(batch.line_offsets)
        self.line_before.extend(batch.line_befores)
        for column, changes in ((self.status, batch.status), (self.task_type, batch.task_type),
                                (self.model, batch.model), (self.priority, batch.priority),
                                (self.run_after_us, batch.run_after),
                                (self.updated_us, batch.updated), (self.last_line, batch.last)):
            if changes:
                column.values[list(changes)] = list(changes.values())
        if batch.made:
            self._rows.add(hash_keys(list(batch.made)), np.fromiter(made, np.int64))
        for row in batch.unsure:
            self._lease(row, self.state(row))
        moved = [(row, created) for row, created in batch.created.items()
                 if row < batch.first_row]
        self._unplaced.update((row, batch.created[row]) for row in made)
        self._place(list(made), list(batch.made))
        self._repend({row for row in batch.touched if row < batch.first_row})
        for row, created in moved:
            self._move(row, created)
        self.leases.file_models(batch.touched, self.model.values)

    # -- claim order -----------------------------------------------------------------

    def _place(self, rows: list[int], task_ids: list[str]) -> None:
        """Put rows made by the last batch into claim order (and the pending ones among
        the pending)."""
        if not rows:
            return
        created = [self._unplaced.pop(row) for row in rows]
        keys = sorted(zip(created, (int(self.prefix.values[row]) for row in rows), task_ids,
                          rows))
        created_sorted = np.array([key[0] for key in keys], np.int64)
        rows_sorted = np.array([key[3] for key in keys], np.int32)
        placed = self.order_created.values
        if not len(placed) or created_sorted[0] > placed[-1]:
            start = self.order.size
            self.order.extend(rows_sorted)
            self.order_created.extend(created_sorted)
            self.position.values[rows_sorted] = np.arange(start, start + len(rows_sorted))
        else:
            at = np.searchsorted(placed, created_sorted, side="left")
            ends = np.searchsorted(placed, created_sorted, side="right")
            runs: dict[int, np.ndarray] = {}  # the id prefixes of each run of equal times
            for i in np.flatnonzero(ends > at).tolist():
                start = int(at[i])
                run = runs.get(start)
                if run is None:
                    run = runs[start] = self.prefix.values[self.order.values[start:ends[i]]]
                at[i] = self._tied_place(keys[i][1:3], start, run)
            self.pending = self.pending + np.searchsorted(at, self.pending, side="right")
            self.order.insert(at, rows_sorted)
            self.order_created.insert(at, created_sorted)
            self.position.values[self.order.values] = np.arange(self.order.size)
        self._repend(set(rows))

    def _tied_place(self, key: tuple[int, str], start: int, run: np.ndarray) -> int:
        """Where a row whose id has prefix and id ``key`` goes in the run of rows of its
        ``created_at`` that starts at ``start`` of the order, ``run`` being their id
        prefixes (sorted, as the run is by prefix and id): after every row that sorts
        before it or equal. Only rows of the same prefix have their id read."""
        prefix, task_id = np.uint64(key[0]), key[1]
        low = start + int(np.searchsorted(run, prefix, side="left"))
        high = start + int(np.searchsorted(run, prefix, side="right"))
        order = self.order.values
        while low < high:
            middle = (low + high) // 2
            if self._first_id(int(order[middle])) > task_id:
                high = middle
            else:
                low = middle + 1
        return low

    def _move(self, row: int, created_us: int) -> None:
        """Give a placed row another ``created_at`` (a line written by hand)."""
        at = int(self.position.values[row])
        if at < 0:
            self._unplaced[row] = created_us
            return
        if int(self.order_created.values[at]) == created_us:
            return
        was_pending = self.status.values[row] == PENDING
        self.pending = self.pending[self.pending != at]
        self.pending = self.pending - (self.pending > at)
        self.order.delete(at)
        self.order_created.delete(at)
        self.position.values[self.order.values] = np.arange(self.order.size)
        self.position.values[row] = -1
        self._unplaced[row] = created_us
        self._place([row], [self._first_id(row)])
        if not was_pending:
            self._repend({row})

    def _repend(self, rows: set[int]) -> None:
        """Bring the pending positions up to date for rows whose status may have changed."""
        if not rows:
            return
        placed = [row for row in rows if self.position.values[row] >= 0]
        positions = self.position.values[placed].astype(np.int64)
        kept = np.ones(len(self.pending), bool)
        kept[np.searchsorted(self.pending, positions[_members(self.pending, positions)])] = False
        now_pending = np.sort(positions[self.status.values[placed] == PENDING])
        pending = self.pending[kept]
        at = np.searchsorted(pending, now_pending)
        if len(now_pending):
            pending = np.insert(pending, at, now_pending)
        if self._claim_columns.current(self.pending):
            self._claim_columns.update(pending, kept, at, self.order.values[now_pending],
                                       self._columns())
        self.pending = pending

    def _columns(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name).values for name in CLAIM_COLUMNS}

    def _pending_columns(self) -> PendingColumns:
        """The claim's columns of the pending rows, gathered again if the pending
        positions were changed other than by :meth:`_repend`."""
        if not self._claim_columns.current(self.pending):
            self._claim_columns.rebuild(self.pending, self.order.values, self._columns())
        return self._claim_columns

    # -- queries -----------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        counts = np.bincount(self.status.values, minlength=len(STATUSES))
        return {status: int(counts[code]) for status, code in STATUS_CODES.items()
                if counts[code]}

    def _matching(self, statuses: tuple[str, ...] | None, task_type: str | None) -> np.ndarray:
        """Rows of these statuses and task type, in claim order."""
        if statuses == ("pending",):
            rows = self._pending_columns().rows
        else:
            rows = self.order.values
            if statuses is not None:
                codes = [STATUS_CODES[status] for status in statuses]
                rows = rows[np.isin(self.status.values[rows], codes)]
        if task_type is not None:
            rows = rows[self.task_type.values[rows] == TYPE_CODES[task_type]]
        return rows

    def page(
        self, statuses: tuple[str, ...] | None, task_type: str | None, by: str,
        newest_first: bool, limit: int | None, offset: int,
    ) -> tuple[list[Task], int]:
        """States of matching tasks ordered by ``by`` (``created_at`` or ``updated_at``)
        then id, and how many matched."""
        rows = self._matching(statuses, task_type)
        end = None if limit is None else offset + limit
        if by == "created_at":
            ordered = rows[::-1] if newest_first else rows
            return [self.state(row) for row in ordered[offset:end].tolist()], len(rows)
        updated = self.updated_us.values[rows]
        if end is not None and end < len(rows):
            edge = np.partition(-updated if newest_first else updated, end - 1)[end - 1]
            rows = rows[-updated <= edge] if newest_first else rows[updated <= edge]
        states = sorted((self.state(row) for row in rows.tolist()),
                        key=lambda state: (micros(state["updated_at"]), state["id"]),
                        reverse=newest_first)
        return states[offset:end], len(updated)

    def next_pending(self, task_types: list[str] | None, now: datetime,
                     excluded_models: frozenset[str]) -> int | None:
        """The pending row a claim takes: of these task types, of no excluded model, due
        by ``now``; the highest priority, then the first in ``created_at`` order."""
        pending = self._pending_columns()
        columns = pending.columns
        eligible = columns["run_after_us"] <= to_micros(now)
        if task_types:
            wanted = np.zeros(len(TASK_TYPES), bool)
            wanted[[TYPE_CODES[task_type] for task_type in task_types]] = True
            eligible &= np.take(wanted, columns["task_type"])  # faster than wanted[...]
        excluded = [self._model_codes[model] for model in excluded_models
                    if model in self._model_codes]
        if excluded:
            allowed = np.ones(len(self.models), bool)
            allowed[excluded] = False
            eligible &= np.take(allowed, columns["model"])
        at = np.flatnonzero(eligible)
        if not len(at):
            return None
        return int(pending.rows[at[int(np.argmax(columns["priority"][at]))]])

    def running_count(self, models: list[str], now: datetime) -> int:
        """Leased rows of these models whose lease runs past ``now``."""
        return self.leases.running([self._model_codes[model] for model in models
                                    if model in self._model_codes], to_micros(now))

    def held_by(self, runner_id: str, now: datetime) -> int | None:
        held = self.leases.held_by(runner_id, to_micros(now))
        return min(held, key=lambda row: int(self.position.values[row]), default=None)

    def expired(self, now: datetime, row: int | None = None) -> list[int]:
        """Leased rows whose lease ran out by ``now`` (of one row, or of all)."""
        now_us = to_micros(now)
        if row is None:
            return self.leases.expired(now_us)
        return [row] if self.leases.has_expired(row, now_us) else []

    def rows_in_claim_order(self) -> list[int]:
        return self.order.values.tolist()


def _members(ordered: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Which of ``values`` are in the sorted array ``ordered``: a binary search each, not a
    pass over ``ordered`` (:func:`numpy.isin`), as a batch touches few rows of many."""
    if not len(ordered):
        return np.zeros(len(values), bool)
    return ordered[np.minimum(np.searchsorted(ordered, values), len(ordered) - 1)] == values


class _Batch:
    """What one :meth:`TaskRows.take` gathers before writing it to the columns."""

    def __init__(self, first_row: int, first_line: int) -> None:
        self.first_row, self.first_line = first_row, first_line
        self.made: dict[str, int] = {}
        """Ids of the tasks the batch makes rows for, and their rows."""
        self.prefixes: list[int] = []
        self.status: dict[int, int] = {}
        self.task_type: dict[int, int] = {}
        self.model: dict[int, int] = {}
        self.priority: dict[int, int] = {}
        self.run_after: dict[int, int] = {}
        self.updated: dict[int, int] = {}
        self.created: dict[int, int] = {}
        self.last: dict[int, int] = {}
        self.touched: set[int] = set()
        self.unsure: set[int] = set()
        """Running rows whose lease only the whole state tells (lines written by hand)."""
        self.line_offsets: list[int] = []
        self.line_befores: list[int] = []

    def add_line(self, row: int, offset: int, before: int) -> None:
        self.last[row] = self.first_line + len(self.line_offsets)
        self.line_offsets.append(offset)
        self.line_befores.append(before)
        self.touched.add(row)

    def make(self, task_id: str, state: Task, offset: int, model: int) -> int:
        row = self.made[task_id] = self.first_row + len(self.made)
        self.prefixes.append(id_prefix(task_id))
        self.status[row] = STATUS_CODES[state["status"]]
        self.task_type[row] = TYPE_CODES[state["task_type"]]
        self.model[row] = model
        self.priority[row] = state.get("priority", 0)
        self.run_after[row] = run_after_micros(state.get("run_after"))
        self.updated[row] = micros(state["updated_at"])
        self.created[row] = micros(state["created_at"])
        self.add_line(row, offset, -1)
        return row
