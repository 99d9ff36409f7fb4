"""Copying stores into the database (``flask store copy``, through
:mod:`app.storage.store_copy`): records, the totals compactions carried over, task
states and task logs, each given as plain values.

Rows go in batches, each committed on its own, and a row whose key is already there
(a record's task_id, a task's id) is left as it is: a copy run twice doubles nothing,
and a copy cut short is finished by running it again.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import psycopg
from psycopg.types.json import Json

from app.storage.postgres.database import PostgresDatabase
from app.storage.postgres.metrics import STORED_FIELDS, stored_values
from app.storage.postgres.tasks import ROW_FIELDS, row_values

BATCH_ROWS = 20_000
STORES = ("metrics", "tasks", "task logs")
COPIED_TABLES = ("metric_records", "metric_compactions", "tasks", "task_logs")


@dataclass
class CopyCounts:
    """Per store: rows copied now, and rows found in the database already."""

    copied: dict[str, int] = field(default_factory=dict)
    present: dict[str, int] = field(default_factory=dict)

    def add(self, store: str, copied: int, offered: int) -> None:
        self.copied[store] = self.copied.get(store, 0) + copied
        self.present[store] = self.present.get(store, 0) + offered - copied

    def summary(self) -> str:
        return "; ".join(f"{store}: {self.copied.get(store, 0)} copied, "
                         f"{self.present.get(store, 0)} already there" for store in STORES)


def _batches(rows: Iterable[Any]) -> Iterator[list[Any]]:
    rows = iter(rows)
    while batch := list(islice(rows, BATCH_ROWS)):
        yield batch


def _insert_staged(conn: psycopg.Connection[Any], table: str, columns: Sequence[str],
                   rows: Iterable[Sequence[Any]], key: str, order: str = "") -> int:
    """Insert ``rows`` into ``table`` but those whose ``key`` it holds already, through a
    staging table filled with COPY: a million rows take seconds, not the minutes of an
    INSERT each. How many were inserted."""
    names = ", ".join(columns)
    conn.execute(f"CREATE TEMPORARY TABLE staged (LIKE {table} INCLUDING DEFAULTS) "
                 "ON COMMIT DROP")
    with conn.cursor().copy(f"COPY staged ({names}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    return conn.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM staged {order} "
                        f"ON CONFLICT ({key}) DO NOTHING").rowcount


def _copy_records(database: PostgresDatabase, records: Iterable[dict[str, Any]],
                  counts: CopyCounts) -> None:
    """Every stored field goes along, the optional ones included (null when a record
    lacks one), in the order they were stored."""
    for batch in _batches(records):
        with database.connection() as conn:
            inserted = _insert_staged(conn, "metric_records", STORED_FIELDS,
                                      map(stored_values, batch), "task_id", "ORDER BY seq")
        counts.add("metrics", inserted, len(batch))


def _copy_tasks(database: PostgresDatabase, tasks: Iterable[dict[str, Any]],
                counts: CopyCounts) -> list[str]:
    """Returns the ids of the tasks offered."""
    task_ids: list[str] = []
    for batch in _batches(tasks):
        task_ids.extend(task["id"] for task in batch)
        with database.connection() as conn:
            inserted = _insert_staged(conn, "tasks", ("id", *ROW_FIELDS, "state"),
                                      ((task["id"], *row_values(task)) for task in batch),
                                      "id")
        counts.add("tasks", inserted, len(batch))
    return task_ids


def _copy_task_logs(database: PostgresDatabase, read_log: Callable[[str], str],
                    task_ids: Iterable[str], counts: CopyCounts) -> None:
    for batch in _batches(task_ids):
        logs = [(task_id, text) for task_id in batch if (text := read_log(task_id))]
        with database.connection() as conn:
            inserted = _insert_staged(conn, "task_logs", ("task_id", "log"), logs, "task_id")
        counts.add("task logs", inserted, len(logs))


def _copy_carried(database: PostgresDatabase, carried: Any) -> None:
    """The totals a compaction of the source carried over, unless the database has some."""
    if carried is not None:
        with database.connection() as conn:
            conn.execute("UPDATE metric_compactions SET carried = %s WHERE carried IS NULL",
                         (Json(carried),))


def copy_into(
    database: PostgresDatabase, records: Iterable[dict[str, Any]], carried: Any,
    tasks: Iterable[dict[str, Any]], read_log: Callable[[str], str],
) -> CopyCounts:
    """Copy metric records (in their stored shape), carried totals (None: none), task
    states and, for each task offered, its log as ``read_log`` gives it; then analyse the
    tables, so the first queries after a copy are planned on statistics of the rows
    copied rather than on those of the empty tables (autovacuum gets to it only later)."""
    counts = CopyCounts()
    _copy_records(database, records, counts)
    _copy_carried(database, carried)
    task_ids = _copy_tasks(database, tasks, counts)
    _copy_task_logs(database, read_log, task_ids, counts)
    with database.connection() as conn:
        conn.execute(f"ANALYZE {', '.join(COPIED_TABLES)}")
    return counts
