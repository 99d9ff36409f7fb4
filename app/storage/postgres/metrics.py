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
from app.storage.metric_records import MetricRecord, RecordBatch, optional_fields, to_micros
from app.storage.metric_totals import Totals
from app.storage.postgres.database import PostgresDatabase, only_row
from app.storage.stores import CompactionReport

T = TypeVar("T")
EXPORT_BATCH_ROWS = 10_000
RECORD_COLUMNS = """seq, task_id, task_type, model, duration_seconds, status = 'completed',
    (extract(epoch FROM created_at) * 1000000)::bigint, xid::text::bigint"""
EXPORT_COLUMNS = f"{RECORD_COLUMNS}, {', '.join(OPTIONAL_RECORD_FIELDS)}"
""":data:`RECORD_COLUMNS` and the optional fields, which only the export reads."""
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


def record_batch(rows: list[tuple[Any, ...]], *, with_optional: bool = False) -> RecordBatch:
    """Rows of :data:`RECORD_COLUMNS` (of :data:`EXPORT_COLUMNS` ``with_optional``) as
    columns, the way the JSONL store decodes lines."""
    seqs, task_ids, task_types, models, durations, completed, created, _ = (
        zip(*(row[:8] for row in rows)) if rows else [()] * 8)
    optional = [optional_fields(dict(zip(OPTIONAL_RECORD_FIELDS, row[8:]))) for row in rows
                ] if with_optional else None
    return RecordBatch(
        np.array(seqs, dtype=np.int64),
        list(task_ids),
        list(task_types),
        list(models),
        np.array(completed, dtype=bool),
        np.round(np.array(durations, dtype=np.float64) * 1e6).astype(np.int64),
        np.array(created, dtype=np.int64),
        optional,
    )


class PostgresMetricStore:
    def __init__(self, database: PostgresDatabase) -> None:
        self.database = database
        self.location = database.location
        self._guard = threading.RLock()
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
                cursor = conn.execute(f"SELECT {RECORD_COLUMNS} FROM metric_records ORDER BY seq",
                                      binary=True)
            else:
                cursor = conn.execute(
                    f"SELECT {RECORD_COLUMNS} FROM metric_records WHERE xid >= %s::text::xid8 "
                    "ORDER BY seq", (str(self._horizon),), binary=True)
            rows = cursor.fetchall()
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
        """In batches, each on a connection of its own, so a slow reader holds none."""
        after = 0
        while True:
            with self.database.connection() as conn:
                rows = conn.execute(
                    f"SELECT {EXPORT_COLUMNS} FROM metric_records WHERE seq > %s ORDER BY seq "
                    "LIMIT %s", (after, EXPORT_BATCH_ROWS), binary=True).fetchall()
            if not rows:
                return
            yield from record_batch(rows, with_optional=True).rows()
            after = rows[-1][0]

    def totals(self) -> Totals:
        with self._guard:
            self.refresh()
            return Totals.from_columns(self.columns).merged(Totals.from_json(self._carried))

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
