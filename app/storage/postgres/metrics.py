"""The metric store in PostgreSQL: one row per record, one record per task_id (a unique
constraint), and the same in-memory columns as the JSONL store, fed incrementally.

Tailing the table by its sequence number alone would miss rows: sequence values are
handed out when a row is inserted, not when its transaction commits, so a row can
become visible after a row with a higher number was read. Each row therefore holds the
id of the transaction that wrote it (``xid``). A read takes one snapshot and notes its
``xmin``, the oldest transaction still running then: every transaction before it had
ended, so its rows were either visible to that read or never will be. The next read
asks again for every row written by a transaction from ``xmin`` on, and skips the rows
of those it took already. A transaction held open for minutes only means re-reading
the rows written since it began.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np
import psycopg
from psycopg.types.json import Json

from app.models.metrics import OPTIONAL_RECORD_FIELDS, RECORD_FIELDS
from app.storage.metric_columns import RecordColumns
from app.storage.metric_records import MetricRecord, RecordBatch, optional_values, to_micros
from app.storage.metric_totals import RunningTotals, Totals
from app.storage.postgres.column_read import read_columns
from app.storage.postgres.database import PostgresDatabase, only_row
from app.storage.stores import CompactionReport

T = TypeVar("T")
EXPORT_BATCH_ROWS = 10_000
RECORD_COLUMNS = f"""seq, task_id, task_type, model, duration_seconds, status = 'completed',
    (extract(epoch FROM created_at) * 1000000)::bigint, xid::text::bigint,
    {', '.join(OPTIONAL_RECORD_FIELDS)}"""
TAIL_QUERY = (f"SELECT {RECORD_COLUMNS} FROM metric_records WHERE xid >= %s::text::xid8 "
              "ORDER BY seq")
"""The rows written by transactions from a horizon on: a few rows of many, to be found
through the ``xid`` index (see :func:`read_tail`)."""
STORED_FIELDS = (*RECORD_FIELDS, *OPTIONAL_RECORD_FIELDS)
"""The columns a record in its stored shape fills (an optional field it lacks: null)."""
PLACEHOLDERS = ["%s::timestamptz" if name == "created_at" else "%s" for name in STORED_FIELDS]


def stored_values(record: dict[str, Any]) -> tuple[Any, ...]:
    """The values of :data:`STORED_FIELDS` of a record in its stored shape."""
    return tuple(record.get(name) for name in STORED_FIELDS)


def insert_record(conn: psycopg.Connection, record: dict[str, Any]) -> bool:
    """Insert a record (in its stored shape) unless its task_id has one; True if inserted."""
    inserted = conn.execute(
        f"""INSERT INTO metric_records ({', '.join(STORED_FIELDS)})
            VALUES ({', '.join(PLACEHOLDERS)})
            ON CONFLICT (task_id) DO NOTHING RETURNING seq""",
        stored_values(record),
    ).fetchone()
    return inserted is not None


def read_tail(conn: psycopg.Connection[Any], horizon: int) -> list[tuple[Any, ...]]:
    """The rows of :data:`TAIL_QUERY` from ``horizon`` on, read through the index whatever
    the table's statistics say. Without statistics (a table just filled by a copy, not
    yet analysed) the planner takes ``xid >= x`` to match a third of the rows and reads
    the whole table instead: 60 ms at a million rows, on every request. The transaction
    must be open (the setting ends with it)."""
    conn.execute("SET LOCAL enable_seqscan = off")
    return conn.execute(TAIL_QUERY, (str(horizon),), binary=True).fetchall()


def record_batch(rows: list[tuple[Any, ...]]) -> RecordBatch:
    """Rows of :data:`RECORD_COLUMNS` as columns, the way the JSONL store decodes lines."""
    seqs, task_ids, task_types, models, durations, completed, created, _, *optional = (
        zip(*rows) if rows else [()] * (8 + len(OPTIONAL_RECORD_FIELDS)))
    return RecordBatch(
        np.array(seqs, dtype=np.int64),
        list(task_ids),
        list(task_types),
        list(models),
        np.array(completed, dtype=bool),
        np.round(np.array(durations, dtype=np.float64) * 1e6).astype(np.int64),
        np.array(created, dtype=np.int64),
        optional_values(dict(zip(OPTIONAL_RECORD_FIELDS, optional))),
    )


class PostgresMetricStore:
    def __init__(self, database: PostgresDatabase) -> None:
        self.database = database
        self.location = database.location
        self._guard = threading.RLock()
        self._totals = RunningTotals()
        self._start_over(generation=None, carried=None)

    def _start_over(self, generation: int | None, carried: Any) -> None:
        self.columns = RecordColumns()
        self._generation = generation
        self._carried = carried
        self._horizon: int | None = None
        """The ``xmin`` of the last read: rows of transactions before it were all seen."""
        self._taken_since_horizon: set[int] = set()
        """Sequence numbers of rows taken in whose transaction is from the horizon on."""

    def close(self) -> None:
        self.database.close()

    def refresh(self) -> None:
        """Take in the rows committed since the last read (everything after a compaction)."""
        with self._guard, self.database.connection() as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            xmin, generation, carried = only_row(conn.execute(
                """SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint,
                          generation, carried FROM metric_compactions"""))
            if generation != self._generation:
                self._start_over(generation, carried)
            if self._horizon is None:
                read = read_columns(conn, xmin)  # the whole table, in the same snapshot
                self.columns = read.columns
                self._horizon = xmin
                self._taken_since_horizon = set(read.taken.tolist())
                return
            rows = read_tail(conn, self._horizon)
            fresh = [row for row in rows if row[0] not in self._taken_since_horizon]
            self.columns.add(record_batch(fresh))
            self._horizon = xmin
            self._taken_since_horizon = {row[0] for row in rows if row[7] >= xmin}

    def read(self, view: Callable[[RecordColumns], T], since_us: int | None = None) -> T:
        with self._guard:
            self.refresh()
            return view(self.columns)

    def record(self, record: dict[str, Any]) -> bool:
        with self.database.connection() as conn:
            return insert_record(conn, record)

    def records(self) -> Iterator[MetricRecord]:
        for batch in self.record_batches():
            yield from batch.rows()

    def record_batches(self) -> Iterator[RecordBatch]:
        """The records in ``seq`` order, in batches, each read on a connection of its own,
        so a slow reader holds none."""
        after = 0
        while True:
            with self.database.connection() as conn:
                rows = conn.execute(
                    f"SELECT {RECORD_COLUMNS} FROM metric_records WHERE seq > %s ORDER BY seq "
                    "LIMIT %s", (after, EXPORT_BATCH_ROWS), binary=True).fetchall()
            if not rows:
                return
            yield record_batch(rows)
            after = rows[-1][0]

    def totals(self) -> Totals:
        with self._guard:
            self.refresh()
            return self._totals.of(self.columns).merged(Totals.from_json(self._carried))

    def compact(self, oldest_us: int) -> CompactionReport:
        """Delete the records created before ``oldest_us`` and add their totals to what
        compactions carried over, in one transaction; every server then reads the
        records afresh (the generation changes)."""
        report = CompactionReport()
        with self.database.connection() as conn:
            carried, = only_row(conn.execute(
                "SELECT carried FROM metric_compactions FOR UPDATE"))
            dropped = record_batch(conn.execute(
                f"DELETE FROM metric_records WHERE created_at < "
                f"'epoch'::timestamptz + %s * interval '1 microsecond' RETURNING {RECORD_COLUMNS}",
                (oldest_us,), binary=True).fetchall())
            totals = Totals.from_json(carried)
            for record in dropped.rows():
                totals.add(record)
            conn.execute("UPDATE metric_compactions SET generation = generation + 1, "
                         "carried = %s", (Json(totals.to_json()),))
            report.expired = len(dropped)
            report.kept, = only_row(conn.execute("SELECT count(*) FROM metric_records"))
        return report

    def writable(self) -> bool:
        return self.database.writable()


__all__ = ["PostgresMetricStore", "insert_record", "to_micros"]
