"""The metric store as a JSONL file: one record per line, one line per task_id.

Each process keeps the records as compact columns and, on every read, takes in only the
bytes appended since its last read (or starts over when the file was replaced).
:meth:`JsonlMetricStore.record` checks and appends under the store's lock, so a task_id
gets exactly one record whoever records it.
"""
from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from app.storage.jsonl.checkpoint import (
    CHECKPOINT_BYTES,
    Checkpoint,
    CheckpointedStore,
    Checkpoints,
)
from app.storage.jsonl.log_reader import Chunk, LogReader, rewound_on_error
from app.storage.jsonl.log_writer import JsonlLog
from app.storage.metric_columns import RecordColumns
from app.storage.metric_records import (
    MetricRecord,
    RecordBatch,
    decode_batch,
    decode_record,
    to_micros,
)
from app.storage.jsonl.metric_scan import skim, stamp_of
from app.storage.metric_totals import RunningTotals, Totals
from app.storage.jsonl.compaction import compact
from app.storage.stores import CompactionReport
from app.storage.jsonl.task_id_index import TaskIdIndex

log = logging.getLogger(__name__)

T = TypeVar("T")
CHECKPOINT_KIND = "metrics/2"
"""The second kind holds the optional fields' columns; a first-kind checkpoint is
ignored and the file read again."""
SKIM_EVERYTHING = to_micros(datetime(9999, 1, 1, tzinfo=timezone.utc))


@dataclass(frozen=True)
class SkimmedRange:
    """Lines only skimmed for task_ids, and the newest created_at among them."""

    start: int
    end: int
    newest: bytes


FirstSeen = Callable[[list[str], np.ndarray], np.ndarray]


def valid_task_id_at(reader: LogReader, offset: int) -> str | None:
    """The task_id of the valid record on the line at ``offset``, if it holds one."""
    raw = reader.read_line_at(offset)
    record = decode_record(raw) if raw else None
    return record.task_id if record else None


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Hold off the cyclic garbage collector while decoding: a chunk makes thousands of
    short-lived dicts and no cycles, and the collections they would set off cost about a
    quarter of a cold read."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def first_records(chunk: Chunk, first_seen: FirstSeen) -> RecordBatch:
    """The chunk's valid records that ``first_seen`` takes as the first of their task;
    invalid lines and second records of a task are logged and skipped."""
    batch = decode_batch(*chunk.decode_columns())
    fresh = first_seen(batch.task_ids, batch.offsets)
    if fresh.all():
        return batch
    log.warning("skipping %d repeated record(s) of a task_id already recorded",
                int((~fresh).sum()))
    return batch.select(fresh)


class JsonlMetricStore(CheckpointedStore):
    def __init__(self, path: str | Path, *, fsync: bool = True,
                 checkpoint_bytes: int | None = CHECKPOINT_BYTES) -> None:
        self.log = JsonlLog(path, fsync=fsync)
        self.location = str(self.log.path)
        self._reader = self.log.reader()
        self._guard = threading.RLock()
        self._checkpoints = Checkpoints(self.log.path, CHECKPOINT_KIND, checkpoint_bytes)
        self._totals = RunningTotals()
        self._start_over()

    def _start_over(self) -> None:
        self.columns = RecordColumns()
        self._task_ids = TaskIdIndex(self._task_id_at)
        self._skimmed: list[SkimmedRange] = []

    def _task_id_at(self, offset: int) -> str | None:
        return valid_task_id_at(self._reader, offset)

    def refresh(self, skim_before_us: int | None = None) -> None:
        """Take in whatever was appended (or rebuild if the file was replaced).

        With ``skim_before_us``, chunks of canonical lines all older than that are only
        skimmed for their task_ids; :meth:`_complete_since` decodes them when needed.
        """
        older_than = None if skim_before_us is None else stamp_of(skim_before_us)
        with self._guard, cyclic_gc_paused(), \
                rewound_on_error(self._reader, self._start_over):
            for chunk in self._checkpoints.poll(self._reader, self._restore, self._start_over):
                skimmed = skim(chunk.start, chunk.data, older_than) if older_than else None
                if skimmed is None:
                    self.columns.add(first_records(chunk, self._task_ids.add_new))
                else:
                    self._task_ids.add_all(skimmed.task_ids, skimmed.offsets)
                    self._remember_skimmed(SkimmedRange(chunk.start, chunk.end, skimmed.newest))
            if not self.log.holding():  # writers should not wait for a checkpoint
                self._checkpoints.save_if_due(self._reader, self._checkpoint)

    def _checkpoint(self) -> Checkpoint:
        arrays, meta = self.columns.saved()
        keys, offsets = self._task_ids.saved()
        skimmed = [[part.start, part.end, part.newest.hex()] for part in self._skimmed]
        return Checkpoint(CHECKPOINT_KIND, {}, {
            **{f"column.{name}": values for name, values in arrays.items()},
            "task_ids.keys": keys, "task_ids.offsets": offsets,
        }, {**meta, "skimmed": skimmed})

    def _follower(self, path: Path) -> JsonlMetricStore:
        return JsonlMetricStore(path, fsync=False, checkpoint_bytes=None)

    def _restore(self, checkpoint: Checkpoint) -> None:
        arrays = checkpoint.arrays
        self.columns = RecordColumns.restored(
            {name[len("column."):]: values for name, values in arrays.items()
             if name.startswith("column.")}, checkpoint.meta)
        self._task_ids = TaskIdIndex.restored(self._task_id_at, arrays["task_ids.keys"],
                                              arrays["task_ids.offsets"])
        self._skimmed = [SkimmedRange(int(start), int(end), bytes.fromhex(newest))
                         for start, end, newest in checkpoint.meta["skimmed"]]

    def _remember_skimmed(self, skimmed: SkimmedRange) -> None:
        last = self._skimmed[-1] if self._skimmed else None
        if last is not None and last.end == skimmed.start:
            self._skimmed[-1] = SkimmedRange(last.start, skimmed.end,
                                             max(last.newest, skimmed.newest))
        else:
            self._skimmed.append(skimmed)

    def _complete_since(self, cutoff_us: int | None) -> None:
        """Decode the skimmed ranges that may hold records created at or after the cutoff
        (all of them when it is None), so the columns hold every such record."""
        older_than = b"" if cutoff_us is None else stamp_of(cutoff_us)
        needed = [skimmed for skimmed in self._skimmed if skimmed.newest >= older_than]
        if not needed:
            return
        self._skimmed = [skimmed for skimmed in self._skimmed if skimmed.newest < older_than]
        with cyclic_gc_paused():
            for skimmed in needed:
                for chunk in self._reader.read_range(skimmed.start, skimmed.end):
                    self.columns.add(first_records(chunk, self._task_ids.first_seen))

    def read(self, view: Callable[[RecordColumns], T], since_us: int | None = None) -> T:
        with self._guard:
            self.refresh(skim_before_us=since_us)
            self._complete_since(since_us)
            return view(self.columns)

    def records(self) -> Iterator[MetricRecord]:
        for batch in self.record_batches():
            yield from batch.rows()

    def record_batches(self) -> Iterator[RecordBatch]:
        """What :meth:`records` gives, as the columns of one chunk of the file at a time
        (read afresh, on a reader of its own)."""
        reader = self.log.reader()
        try:
            task_ids = TaskIdIndex(partial(valid_task_id_at, reader))
            for chunk in reader.poll_chunks():
                with cyclic_gc_paused():
                    batch = first_records(chunk, task_ids.add_new)
                yield batch
        finally:
            reader.close()

    def record(self, record: dict[str, Any]) -> bool:
        """Check and append under the store's lock; the new line is read back after the
        lock is let go, so other writers wait only for the check and the append."""
        with self._guard:
            with self.log.locked():
                self.refresh(skim_before_us=SKIM_EVERYTHING)
                if self._task_ids.contains(record["task_id"]):
                    return False
                self.log.append([record])
            self.refresh(skim_before_us=SKIM_EVERYTHING)
        return True

    def compact(self, oldest_us: int) -> CompactionReport:
        """Rewrite the file keeping the valid records created at or after ``oldest_us``.

        Lines that are not valid records (what :meth:`refresh` skips: bad fields, a
        ``created_at`` that does not parse, a second record of a task) are dropped and
        counted. A dropped task_id no longer counts as recorded. The totals of the
        expired records are carried over, so :meth:`totals` does not go down.
        """
        dropped = Totals()

        def keep(
            lines: Iterator[dict[str, Any]], report: CompactionReport
        ) -> Iterator[dict[str, Any]]:
            seen: set[str] = set()
            for raw in lines:
                record = decode_record(raw)
                if record is None or record.task_id in seen:
                    report.invalid += 1
                    continue
                seen.add(record.task_id)
                if record.created_us < oldest_us:
                    report.expired += 1
                    dropped.add(record)
                else:
                    report.kept += 1
                    yield raw

        return compact(
            self.log, keep, carry=lambda before: Totals.from_json(before).merged(dropped).to_json(),
            before_replace=self._save_replacement_checkpoint,
        )

    def totals(self) -> Totals:
        """The records' totals and those carried over, read for the same file, so the
        two never overlap or miss."""
        with self._guard:
            columns = self.read(lambda columns: columns)
            carried = self.log.carried(self._reader)
            return self._totals.of(columns).merged(Totals.from_json(carried))

    def writable(self) -> bool:
        return self.log.writable()
