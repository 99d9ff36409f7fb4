"""The task store in PostgreSQL: one row per task holding its latest state (as JSON),
with the fields that listing, claiming and leases look up copied into indexed columns.

A transaction is a database transaction whose rows are locked as they are read
(``FOR UPDATE``); a claim skips rows another claimer holds (``SKIP LOCKED``), so
claimers never wait on each other. A final state and its metric record are written
in the same transaction: they commit together or not at all.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Json

from app.models.agent import ENDED_STATUSES
from app.storage.postgres.database import PostgresDatabase, only_row
from app.storage.postgres.metrics import insert_record
from app.storage.stores import MAX_LOG_BYTES, CompactionReport, Task, TaskExists, check_order

ROW_FIELDS = ("status", "task_type", "created_at", "updated_at", "runner_id",
              "lease_expires_at", "recorded", "priority", "run_after", "model")
ROW_DEFAULTS = {"priority": 0}
"""What a column holds for a state without the field (stored by an earlier version)."""


def row_values(state: Task) -> tuple[Any, ...]:
    return (*(state.get(name, ROW_DEFAULTS.get(name)) for name in ROW_FIELDS), Json(state))


def _states(cursor: psycopg.Cursor[Any]) -> list[Task]:
    return [state for state, in cursor.fetchall()]


def _one(cursor: psycopg.Cursor[Any]) -> Task | None:
    row = cursor.fetchone()
    return row[0] if row else None


class PostgresTaskStore:
    def __init__(self, database: PostgresDatabase) -> None:
        self.database = database
        self.location = database.location

    def close(self) -> None:
        self.database.close()

    def insert(self, task: Task) -> None:
        with self.database.connection() as conn:
            inserted = conn.execute(
                f"INSERT INTO tasks (id, {', '.join(ROW_FIELDS)}, state) "
                f"VALUES (%s, {', '.join(['%s'] * len(ROW_FIELDS))}, %s) "
                "ON CONFLICT (id) DO NOTHING", (task["id"], *row_values(task))).rowcount
        if not inserted:
            raise TaskExists(f"task {task['id']} exists")

    def get(self, task_id: str) -> Task | None:
        with self.database.connection() as conn:
            return _one(conn.execute("SELECT state FROM tasks WHERE id = %s", (task_id,)))

    def page(
        self, statuses: tuple[str, ...] | None, task_type: str | None, newest_first: bool,
        limit: int | None, offset: int = 0, by: str = "created_at",
    ) -> tuple[list[Task], int]:
        """Only the filters asked for go into the query, so each shape keeps a plan that
        uses its index."""
        check_order(by)
        filters = {"status = ANY(%(statuses)s)": statuses, "task_type = %(task_type)s": task_type}
        asked = [condition for condition, value in filters.items() if value is not None]
        where = f"WHERE {' AND '.join(asked)}" if asked else ""
        values = {"statuses": list(statuses or ()), "task_type": task_type, "limit": limit,
                  "offset": offset}
        direction = "DESC" if newest_first else "ASC"
        with self.database.connection() as conn:
            tasks = _states(conn.execute(
                f"SELECT state FROM tasks {where} ORDER BY {by} {direction}, id "
                f"{direction} LIMIT %(limit)s OFFSET %(offset)s", values))
            total, = only_row(conn.execute(f"SELECT count(*) FROM tasks {where}", values))
        return tasks, total

    def counts(self) -> dict[str, int]:
        with self.database.connection() as conn:
            return dict(conn.execute("SELECT status, count(*) FROM tasks GROUP BY status"))

    def has_due(self, now: datetime, task_id: str | None = None) -> bool:
        with self.database.connection() as conn:
            due, = only_row(conn.execute(
                """SELECT EXISTS (SELECT 1 FROM tasks WHERE status = 'running'
                                  AND lease_expires_at <= %(now)s
                                  AND (%(id)s::text IS NULL OR id = %(id)s))
                       OR EXISTS (SELECT 1 FROM tasks WHERE recorded = false)""",
                {"now": now, "id": task_id}))
        return bool(due)

    @contextmanager
    def transaction(self) -> Iterator[PostgresTransaction]:
        with self.database.connection() as conn:
            yield PostgresTransaction(conn)

    def compact(self, oldest: datetime) -> tuple[CompactionReport, set[str]]:
        report = CompactionReport()
        with self.database.connection() as conn:
            dropped = {task_id for task_id, in conn.execute(
                "DELETE FROM tasks WHERE status = ANY(%s) AND recorded IS DISTINCT FROM false "
                "AND updated_at < %s RETURNING id", (list(ENDED_STATUSES), oldest))}
            conn.execute("DELETE FROM task_logs WHERE task_id = ANY(%s)", (list(dropped),))
            report.expired = len(dropped)
            report.kept, = only_row(conn.execute("SELECT count(*) FROM tasks"))
        return report, dropped

    def append_log(self, task_id: str, text: str) -> None:
        """Keeps the last :data:`MAX_LOG_BYTES` of UTF-8, as the JSONL store's files do."""
        data = text.encode("utf-8", "replace")
        if not data:
            return
        with self.database.connection() as conn:
            row = conn.execute("SELECT log FROM task_logs WHERE task_id = %s FOR UPDATE",
                               (task_id,)).fetchone()
            kept = ((row[0].encode() if row else b"") + data)[-MAX_LOG_BYTES:]
            conn.execute("INSERT INTO task_logs (task_id, log) VALUES (%s, %s) "
                         "ON CONFLICT (task_id) DO UPDATE SET log = excluded.log",
                         (task_id, kept.decode("utf-8", "ignore")))

    def read_log(self, task_id: str) -> str:
        with self.database.connection() as conn:
            row = conn.execute("SELECT log FROM task_logs WHERE task_id = %s",
                               (task_id,)).fetchone()
        return row[0] if row else ""

    def remove_logs(self, task_ids: set[str]) -> None:
        with self.database.connection() as conn:
            conn.execute("DELETE FROM task_logs WHERE task_id = ANY(%s)", (list(task_ids),))

    def writable(self) -> bool:
        return self.database.writable()


class PostgresTransaction:
    """Reads lock the rows they return until the transaction ends."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn
        self._held: dict[str, Task] = {}

    def _hold(self, state: Task | None) -> Task | None:
        if state is not None:
            self._held[state["id"]] = state
        return state

    def _hold_all(self, states: list[Task]) -> list[Task]:
        self._held.update((state["id"], state) for state in states)
        return states

    def get(self, task_id: str) -> Task | None:
        return self._hold(_one(self.conn.execute(
            "SELECT state FROM tasks WHERE id = %s FOR UPDATE", (task_id,))))

    def held_by(self, runner_id: str, now: datetime) -> Task | None:
        return self._hold(_one(self.conn.execute(
            """SELECT state FROM tasks WHERE status = 'running' AND runner_id = %s
               AND lease_expires_at > %s ORDER BY created_at, id LIMIT 1 FOR UPDATE""",
            (runner_id, now))))

    def next_pending(self, task_types: list[str] | None, now: datetime,
                     excluded_models: frozenset[str] = frozenset()) -> Task | None:
        return self._hold(_one(self.conn.execute(
            """SELECT state FROM tasks WHERE status = 'pending'
               AND (%(types)s::text[] IS NULL OR task_type = ANY(%(types)s))
               AND (run_after IS NULL OR run_after <= %(now)s)
               AND model <> ALL(%(excluded)s::text[])
               ORDER BY priority DESC, created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED""",
            {"types": task_types or None, "now": now, "excluded": sorted(excluded_models)})))

    def running_count(self, models: list[str], now: datetime) -> int:
        count, = only_row(self.conn.execute(
            """SELECT count(*) FROM tasks WHERE status = 'running' AND model = ANY(%s)
               AND lease_expires_at > %s""", (models, now)))
        return int(count)

    def lock(self, keys: list[str], wait: bool = True) -> bool:
        """Transaction-level advisory locks, taken in one order."""
        for key in sorted(set(keys)):
            if wait:
                self.conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                                  (key,))
            elif not only_row(self.conn.execute(
                    "SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0))", (key,)))[0]:
                return False
        return True

    def expired(self, now: datetime, task_id: str | None = None) -> list[Task]:
        return self._hold_all(_states(self.conn.execute(
            """SELECT state FROM tasks WHERE status = 'running' AND lease_expires_at <= %(now)s
               AND (%(id)s::text IS NULL OR id = %(id)s) ORDER BY id FOR UPDATE SKIP LOCKED""",
            {"now": now, "id": task_id})))

    def unrecorded(self) -> list[Task]:
        return self._hold_all(_states(self.conn.execute(
            "SELECT state FROM tasks WHERE recorded = false ORDER BY id FOR UPDATE SKIP LOCKED")))

    def save(self, change: dict[str, Any]) -> None:
        task_id = change["id"]
        state = self._held.get(task_id) or self.get(task_id)
        if state is None:
            raise LookupError(f"task {task_id} is not in the store")
        merged = self._held[task_id] = {**state, **change}
        self.conn.execute(
            f"UPDATE tasks SET ({', '.join(ROW_FIELDS)}, state) = "
            f"({', '.join(['%s'] * len(ROW_FIELDS))}, %s) WHERE id = %s",
            (*row_values(merged), task_id))

    def record(self, record: dict[str, Any]) -> None:
        insert_record(self.conn, record)
        self.save({"id": record["task_id"], "recorded": True})
