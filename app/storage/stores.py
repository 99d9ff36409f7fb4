"""The boundary between the services and the stores behind them.

Two stores, each a small interface with two backends: JSONL files on this machine's
disk (:mod:`app.storage.jsonl`), the embedded default, and PostgreSQL
(:mod:`app.storage.postgres`) for many servers on many hosts. The services hold the rules
(which transition is legal, what a lease expiry does, windows and percentiles); a store
only keeps what it is given, answers reads, and makes a :meth:`TaskStore.transaction`
atomic against every other writer of the same store, in this process or any other.
``tests/storage/test_store_contract.py`` holds both backends to these interfaces.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import datetime
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from app.storage.metric_columns import RecordColumns
from app.storage.metric_records import MetricRecord
from app.storage.metric_totals import Totals

T = TypeVar("T")
Task = dict[str, Any]

ORDERS = ("created_at", "updated_at")
"""What :meth:`TaskStore.page` orders by."""

MAX_LOG_BYTES = 1024 * 1024
"""How much of the output runners sent of a task a store keeps: the last MiB."""


class StoreUnavailable(OSError):
    """The store could not be reached or written (folder not writable, disk full,
    database down...)."""


class TaskExists(ValueError):
    """:meth:`TaskStore.insert` of an id the store holds already."""


def check_order(by: str) -> None:
    """Refuse, with ValueError, an order :meth:`TaskStore.page` does not know."""
    if by not in ORDERS:
        raise ValueError(f"tasks are ordered by one of {ORDERS}, not {by!r}")


@dataclass
class CompactionReport:
    """Counts of one compaction: lines kept and why the others went."""

    kept: int = 0
    expired: int = 0
    superseded: int = 0
    invalid: int = 0

    def summary(self) -> str:
        return (f"kept {self.kept}, dropped {self.expired} older than the cutoff, "
                f"{self.superseded} superseded, {self.invalid} invalid")


class MetricStore(Protocol):
    """Append-only metric records, at most one per task_id, read as in-memory columns
    that each process keeps and feeds with what other processes appended since."""

    location: str
    """Where the records are, for people (never a password)."""

    def read(self, view: Callable[[RecordColumns], T], since_us: int | None = None) -> T:
        """``view(columns)``, on columns holding at least every record created at or
        after ``since_us`` (None: every record), while no other thread changes them."""

    def record(self, record: dict[str, Any]) -> bool:
        """Store a record (in its stored shape) unless its task_id has one. True if stored."""

    def records(self) -> Iterator[MetricRecord]:
        """Every record, in the order stored, read afresh."""

    def totals(self) -> Totals:
        """Totals of every record ever stored, those compacted away included."""

    def compact(self, oldest_us: int) -> CompactionReport:
        """Drop the records created before ``oldest_us``, carrying their totals over."""

    def writable(self) -> bool:
        """Whether a write could succeed now."""

    def close(self) -> None:
        """Let go of files and connections; the next call takes them up again."""


class TaskTransaction(Protocol):
    """Reads and writes with no other writer of the store in between; tasks read here are
    held until the transaction ends, and each write is seen by the reads after it.

    If the block raises, PostgreSQL undoes its writes while the JSONL files keep those
    made before the failure, so the services order their writes to leave a state they
    can go on from whatever the point of failure (a record is written before its task is
    marked recorded)."""

    def get(self, task_id: str) -> Task | None:
        ...

    def held_by(self, runner_id: str, now: datetime) -> Task | None:
        """The oldest task ``runner_id`` holds under a live lease."""

    def next_pending(self, task_types: list[str] | None, now: datetime,
                     excluded_models: frozenset[str] = frozenset()) -> Task | None:
        """The pending task a claim takes next, which no other claimer is taking: of
        ``task_types`` (None: any), of no model in ``excluded_models``, whose ``run_after``
        (if any) is not after ``now``; the highest ``priority`` (missing: 0), then the
        oldest (``created_at``, then ``id``)."""

    def running_count(self, models: list[str], now: datetime) -> int:
        """How many tasks of these models are running under a live lease."""

    def lock(self, keys: list[str], wait: bool = True) -> bool:
        """Hold these keys until this transaction ends, once no other transaction holds
        any of them: what makes a check of :meth:`running_count` and the claim after it
        exact, while transactions of other keys go on. With ``wait`` false, False at
        once (and nothing waited for) if another transaction holds one of them."""

    def expired(self, now: datetime, task_id: str | None = None) -> list[Task]:
        """Running tasks whose lease ran out by ``now`` (of one task, or of all)."""

    def unrecorded(self) -> list[Task]:
        """Final tasks whose metric record is not known to be written."""

    def save(self, change: dict[str, Any]) -> None:
        """Lay ``change`` (with the task's ``id``) over the task's state; LookupError if
        the store has no such task."""

    def record(self, record: dict[str, Any]) -> None:
        """Write the metric record of the final task ``record["task_id"]`` (unless it
        has one) and mark the task recorded."""


class TaskStore(Protocol):
    """The latest state of every task, and the output runners sent of each."""

    location: str

    def insert(self, task: Task) -> None:
        """Store a new task; :class:`TaskExists` if its id is taken."""

    def get(self, task_id: str) -> Task | None:
        ...

    def page(
        self, statuses: tuple[str, ...] | None, task_type: str | None, newest_first: bool,
        limit: int | None, offset: int = 0, by: str = "created_at",
    ) -> tuple[list[Task], int]:
        """Tasks of these statuses (None: any) and task type, ordered by ``by`` (one of
        :data:`ORDERS`, else ValueError) then ``id``, from ``offset``, at most ``limit``
        (None: all); and how many matched."""

    def counts(self) -> dict[str, int]:
        """How many tasks are in each status there is a task in."""

    def has_due(self, now: datetime, task_id: str | None = None) -> bool:
        """Whether a lease has run out, or a final task lacks its record (cheap)."""

    def transaction(self) -> AbstractContextManager[TaskTransaction]:
        ...

    def compact(self, oldest: datetime) -> tuple[CompactionReport, set[str]]:
        """Keep each task's latest state, dropping final, recorded tasks last updated
        before ``oldest``; returns the report and the ids dropped."""

    def append_log(self, task_id: str, text: str) -> None:
        """Add to the output a runner sent of the task (the last :data:`MAX_LOG_BYTES`
        are kept)."""

    def read_log(self, task_id: str) -> str:
        ...

    def remove_logs(self, task_ids: set[str]) -> None:
        ...

    def writable(self) -> bool:
        ...

    def close(self) -> None:
        ...
