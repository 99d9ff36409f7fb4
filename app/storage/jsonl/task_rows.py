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

import operator
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from itertools import compress, repeat
from typing import Any

import numpy as np

from app.clock import parse_iso
from app.models.agent import STATUSES, TASK_TYPES
from app.storage.jsonl.hash_runs import HashRuns, hash_key, hash_keys
from app.storage.jsonl.leases import Leases
from app.storage.jsonl.pending_columns import CLAIM_COLUMNS, PendingColumns
from app.storage.jsonl.task_scan import Unsure, scan, texts_ok
from app.storage.metric_records import to_micros
from app.storage.stores import Task

LineAt = Callable[[int], "dict[str, Any] | None"]

STATUS_CODES = {status: code for code, status in enumerate(STATUSES)}
TYPE_CODES = {task_type: code for code, task_type in enumerate(TASK_TYPES)}
PENDING, RUNNING = STATUS_CODES["pending"], STATUS_CODES["running"]
LEASE_FIELDS = ("runner_id", "lease_expires_at")
BULK_LINES = 256
"""Batches of this many lines or more are taken in by :meth:`TaskRows._take_many`."""
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


def id_prefixes(task_ids: list[str]) -> np.ndarray:
    """:func:`id_prefix` of each id (in numpy when they are all ASCII and 8 long or more)."""
    count = len(task_ids)
    if count >= 64:
        heads = "".join(map(operator.getitem, task_ids, repeat(slice(0, 8))))
        if len(heads) == 8 * count and heads.isascii():
            return np.frombuffer(heads.encode("ascii"), ">u8").astype(np.uint64)
    return np.fromiter(map(id_prefix, task_ids), np.uint64, count)


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

    def _known_rows(self, task_ids: list[str], keys: np.ndarray | None = None,
                    prefixes: np.ndarray | None = None) -> np.ndarray:
        """The row of each id (-1 for ids not seen before); ``keys`` and ``prefixes``:
        the ids' hash keys and prefixes, if known."""
        keys = hash_keys(task_ids) if keys is None else keys
        found = self._rows.only_values(keys)
        prefixes = id_prefixes(task_ids) if prefixes is None else prefixes
        hit = found >= 0
        found[hit] = np.where(self.prefix.values[found[hit]] == prefixes[hit], found[hit], -1)
        for i in np.flatnonzero(found == -2).tolist():
            row = self.row_of(task_ids[i])
            found[i] = -1 if row is None else row
        return found

    # -- taking lines in ---------------------------------------------------------------

    def take(self, lines: list[tuple[int, dict[str, Any]]]) -> None:
        """Take in lines read from the file, in file order; lines that are no usable
        task state (or change of one) are skipped. A batch of many lines (a cold start
        reads thousands at a time) is checked field by field in numpy
        (:meth:`_take_many`); a few lines one by one, the changes gathered in plain
        Python first and written to the columns at its end, in one go."""
        if len(lines) >= BULK_LINES:
            offsets = np.fromiter((offset for offset, _ in lines), np.int64, len(lines))
            self.take_columns(offsets, [line for _, line in lines])
            return
        self._take_each([(offset, line) for offset, line in lines
                         if _is_text(line.get("id"))])

    def take_columns(self, offsets: np.ndarray, lines: list[dict[str, Any]]) -> None:
        """:meth:`take` for lines given as their offsets and their records."""
        task_ids: list[Any] = list(map(dict.get, lines, repeat("id")))
        with_id = texts_ok(task_ids)
        if not with_id.all():
            offsets, lines = offsets[with_id], list(compress(lines, with_id))
            task_ids = list(compress(task_ids, with_id))
        if len(lines) >= BULK_LINES:
            try:
                self._take_many(offsets, lines, task_ids)
                return
            except Unsure:
                pass  # nothing was changed yet: taken in line by line below
        self._take_each(list(zip(offsets.tolist(), lines)))

    def _take_each(self, lines: list[tuple[int, dict[str, Any]]]) -> None:
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

    def _take_many(self, offsets: np.ndarray, values: list[dict[str, Any]],
                   task_ids: list[str]) -> None:
        """:meth:`take` for many lines: their fields checked and converted a field at a
        time (:func:`~app.storage.jsonl.task_scan.scan`), the lines of each row and the
        last value each line sets found with numpy, and only the running rows' leases
        followed line by line. Raises :class:`Unsure`, having changed nothing, for a
        batch the scan does not answer for."""
        keys, prefixes = hash_keys(task_ids), id_prefixes(task_ids)
        scanned = scan(values, STATUS_CODES, TYPE_CODES, REQUIRED_FIELDS, LEASE_FIELDS)
        known = self._known_rows(task_ids, keys, prefixes)
        first_row, first_line = len(self), self.line_offset.size
        row_of = known.copy()
        applied = (known >= 0) & scanned.change_ok
        new = np.flatnonzero(known < 0)
        creators = np.empty(0, np.int64)
        if len(new):
            making = new[scanned.state_ok[new]].tolist()
            first = dict(zip(map(task_ids.__getitem__, reversed(making)), reversed(making)))
            creators = np.sort(np.fromiter(first.values(), np.int64, len(first)))
            creator = np.fromiter(map(first.get, map(task_ids.__getitem__, new.tolist()),
                                      repeat(-1)), np.int64, len(new))
            taken = (creator >= 0) & ((new == creator)
                                      | ((new > creator) & scanned.change_ok[new]))
            applied[new[taken]] = True
            row_of[new[taken]] = first_row + np.searchsorted(creators, creator[taken])
        at = np.flatnonzero(applied)
        rows = row_of[at]
        made_ids = list(map(task_ids.__getitem__, creators.tolist()))
        made = np.arange(first_row, first_row + len(creators))
        # each applied line's place in the chain of its row's lines
        line_numbers = first_line + np.arange(len(at))
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        follows = np.zeros(len(at), bool)
        follows[1:] = sorted_rows[1:] == sorted_rows[:-1]
        chain_start = np.full(len(at), -1, np.int64)
        old = sorted_rows < first_row
        chain_start[old] = self.last_line.values[sorted_rows[old]]
        before_sorted = chain_start
        before_sorted[1:] = np.where(follows[1:], line_numbers[order][:-1], chain_start[1:])
        line_befores = np.empty(len(at), np.int64)
        line_befores[order] = before_sorted
        ends = _group_ends(sorted_rows)
        touched = sorted_rows[ends]
        # the value each row is left with, for each field its lines set
        status_before = self.status.values[touched[touched < first_row]].copy()
        changed = {name: _last_of_rows(rows, column[at], present[at])
                   for name, (present, column) in scanned.numbers.items()}
        changed["status"] = _last_of_rows(rows, scanned.status[at], scanned.status[at] >= 0)
        changed["task_type"] = _last_of_rows(rows, scanned.task_type[at],
                                             scanned.task_type[at] >= 0)
        recorded = _last_of_rows(rows, scanned.recorded[at], scanned.recorded[at] >= 0)
        with_model = at[scanned.has_model[at]].tolist()
        models = list(map(scanned.models.__getitem__, with_model))
        for model in dict.fromkeys(models):
            self.model_code(model)
        model_codes = np.fromiter(map(self._model_codes.__getitem__, models), np.int64,
                                  len(models))
        changed["model"] = _last_of_rows(row_of[with_model], model_codes,
                                         np.ones(len(models), bool))
        # new rows, then the changes of old ones
        columns = {"status": self.status, "task_type": self.task_type, "model": self.model,
                   "priority": self.priority, "run_after": self.run_after_us,
                   "updated_at": self.updated_us}
        for name, column in columns.items():
            fresh = np.zeros(len(made), column.values.dtype)
            changed_rows, changed_values = changed[name]
            is_new = changed_rows >= first_row
            fresh[changed_rows[is_new] - first_row] = changed_values[is_new]
            column.extend(fresh)
            column.values[changed_rows[~is_new]] = changed_values[~is_new]
        self.prefix.extend(prefixes[creators])
        last_lines = np.empty(len(made), np.int64)
        self.last_line.extend(last_lines)
        self.last_line.values[touched] = line_numbers[order][ends]
        self.position.extend(np.full(len(made), -1, np.int32))
        self.line_offset.extend(offsets[at])
        self.line_before.extend(line_befores)
        if len(made):
            self._rows.add(keys[creators], made)
        for row, mark in zip(*(part.tolist() for part in recorded)):
            if mark == 0:
                self.unrecorded.add(row)
            else:
                self.unrecorded.discard(row)
        unsure = self._follow_leases(touched, status_before, first_row, at, rows, values,
                                     scanned, set(creators.tolist()))
        for row in unsure:
            self._lease(row, self.state(row))
        created_rows, created_us = changed["created_at"]
        moved = [(row, created) for row, created in
                 zip(created_rows.tolist(), created_us.tolist()) if row < first_row]
        fresh_created = np.zeros(len(made), np.int64)
        is_new = created_rows >= first_row
        fresh_created[created_rows[is_new] - first_row] = created_us[is_new]
        self._place_new(made, fresh_created, made_ids)
        self._repend(set(touched[touched < first_row].tolist()))
        for row, created in moved:
            self._move(row, created)
        leased = np.fromiter(self.leases, np.int64)
        self.leases.file_models(leased[np.isin(leased, touched)].tolist(), self.model.values)

    def _follow_leases(self, touched: np.ndarray, status_before: np.ndarray, first_row: int,
                       at: np.ndarray, rows: np.ndarray, values: list[dict[str, Any]],
                       scanned: Any, made: set[int]) -> set[int]:
        """Bring the leases up to date for the rows a batch touched (its columns
        written): a row left not running holds none; a running one follows its lines as
        :meth:`_track` does. Returns the rows whose lease only their whole state tells."""
        running = self.status.values[touched] == RUNNING
        leased = np.fromiter(self.leases, np.int64)
        for row in leased[np.isin(leased, touched[~running])].tolist():
            self.leases.release(row)
        unsure: set[int] = set()
        following = touched[running]
        if not len(following):
            return unsure
        status = dict(zip(touched[touched < first_row].tolist(), status_before.tolist()))
        for line, row in zip(at[np.isin(rows, following)].tolist(),
                             rows[np.isin(rows, following)].tolist()):
            code = int(scanned.status[line])
            whole = row in made and row not in status
            if code >= 0:
                status[row] = code
            self._track_lease(row, values[line], whole, status[row], unsure)
        return unsure

    def _track_lease(self, row: int, fields: dict[str, Any], whole: bool, status: int,
                     unsure: set[int]) -> None:
        """The lease part of :meth:`_track`, the row's status given."""
        if status != RUNNING:
            self.leases.release(row)
            unsure.discard(row)
            return
        held = self.leases.get(row)
        if held is None and not whole and row not in unsure:
            if not any(name in fields for name in ("status", *LEASE_FIELDS)):
                return
            if not all(name in fields for name in LEASE_FIELDS):
                unsure.add(row)
                return
        self._lease(row, {name: fields[name] if name in fields else (held or {}).get(name)
                          for name in LEASE_FIELDS})

    def _place_new(self, rows: np.ndarray, created: np.ndarray, task_ids: list[str]) -> None:
        """:meth:`_place` for the rows a batch made, given their ``created_at``."""
        if not len(rows):
            return
        self._unplaced.update(zip(rows.tolist(), created.tolist()))
        self._place(rows.tolist(), task_ids)

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
        prefixes = self.prefix.values[rows]
        keys = _claim_order(np.array(created, np.int64), prefixes, task_ids, rows)
        if isinstance(keys, _ClaimKeys):
            created_sorted = keys.created
            rows_sorted = np.array(rows, np.int32)[keys.order]
        else:
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


class _ClaimKeys:
    """(created_at, id prefix, id, row) of rows sorted in claim order, built on demand
    (a sequence of tuples as ``sorted`` would give, without a tuple per row up front)."""

    def __init__(self, created: np.ndarray, prefixes: np.ndarray, task_ids: list[str],
                 rows: list[int], order: np.ndarray) -> None:
        self.created, self.prefixes = created[order], prefixes[order]
        self.task_ids, self.rows = task_ids, rows
        self.order = order.tolist()

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int) -> tuple[int, int, str, int]:
        j = self.order[i]
        return (int(self.created[i]), int(self.prefixes[i]), self.task_ids[j], self.rows[j])

    def __iter__(self) -> Iterator[tuple[int, int, str, int]]:
        return (self[i] for i in range(len(self)))


def _claim_order(created: np.ndarray, prefixes: np.ndarray, task_ids: list[str],
                 rows: list[int]) -> _ClaimKeys | list[tuple[int, int, str, int]]:
    """(created_at, id prefix, id, row) of ``rows`` sorted: in numpy when no two share
    both ``created_at`` and prefix (only the ids would tell them apart)."""
    order = np.lexsort((prefixes, created))
    ordered_created, ordered_prefixes = created[order], prefixes[order]
    if not ((ordered_created[1:] == ordered_created[:-1])
            & (ordered_prefixes[1:] == ordered_prefixes[:-1])).any():
        return _ClaimKeys(created, prefixes, task_ids, rows, order)
    return sorted(zip(created.tolist(), prefixes.tolist(), task_ids, rows))


def _last_of_rows(rows: np.ndarray, values: np.ndarray, present: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The rows among ``rows[present]`` and, for each, its last value in ``values``."""
    rows, values = rows[present], values[present]
    order = np.argsort(rows, kind="stable")
    ordered = rows[order]
    ends = _group_ends(ordered)
    return ordered[ends], values[order[ends]]


def _group_ends(ordered: np.ndarray) -> np.ndarray:
    """Where each run of equal values of ``ordered`` ends (its last index)."""
    if not len(ordered):
        return np.empty(0, np.int64)
    return np.flatnonzero(np.append(ordered[1:] != ordered[:-1], True))


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
