"""Putting records in, and reading them back from, whichever backend a test runs on
(see the ``backend`` fixture): the JSONL files, or the database AGENT_DATABASE_URL names."""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import psycopg

from app.models.metrics import OPTIONAL_RECORD_FIELDS, RECORD_FIELDS
from app.storage.postgres import PostgresDatabase
from app.storage.store_copy import copy_stores
from tests.support.reference import records_in
from tests.support.seed import write_store


def database_url() -> str | None:
    return os.environ.get("AGENT_DATABASE_URL") or None


def _seed(logs_dir: Path, write: Callable[[Path], None]) -> None:
    """``write(folder)`` writes JSONL stores: into ``logs_dir``, or, on PostgreSQL, into a
    folder copied in as ``flask store copy`` does (valid records, first per task_id, in
    order; each task's latest state)."""
    url = database_url()
    if url is None:
        write(logs_dir)
        return
    with tempfile.TemporaryDirectory() as staging:
        write(Path(staging))
        database = PostgresDatabase(url)
        try:
            copy_stores(Path(staging), database)
        finally:
            database.close()


def seed_metrics(logs_dir: Path, records: list[dict], *, noise: bool = True) -> None:
    """Append ``records`` (and noise lines, see :func:`write_store`) to the metric store."""
    _seed(logs_dir, lambda folder: write_store(folder / "metrics.jsonl", records, noise=noise))


def seed_store_file(logs_dir: Path, source: Path) -> None:
    """Put a whole store file in place (hard-linked: it may be large) or copy it in."""
    _seed(logs_dir, lambda folder: os.link(source, folder / source.name))


def seed_lines(logs_dir: Path, store: str, lines: list[object]) -> None:
    """Append lines (JSON values, or text as it is) to a store: ``metrics.jsonl`` or
    ``tasks.jsonl``."""
    def write(folder: Path) -> None:
        with open(folder / store, "a") as handle:
            for line in lines:
                handle.write((line if isinstance(line, str) else json.dumps(line)) + "\n")

    _seed(logs_dir, write)


def stored_task_ids(logs_dir: Path) -> list[str]:
    """The id on each line of the task file, or of each row, oldest task first."""
    url = database_url()
    if url is None:
        path = logs_dir / "tasks.jsonl"
        return [json.loads(line)["id"] for line in path.read_text().splitlines()]
    with psycopg.connect(url) as conn:
        return [task_id for task_id, in conn.execute("SELECT id FROM tasks "
                                                     "ORDER BY created_at, id")]


def stored_records(logs_dir: Path) -> list[dict]:
    """The valid records in the metric store, first per task_id, in store order, in their
    stored shape (read without the service's code: the file, or plain SQL; an optional
    field a row holds null for is left out, as the file leaves it out)."""
    url = database_url()
    if url is None:
        return records_in(logs_dir / "metrics.jsonl")
    with psycopg.connect(url) as conn:
        exists, = conn.execute("SELECT to_regclass('metric_records') IS NOT NULL").fetchone()
        if not exists:
            return []
        rows = conn.execute(
            f"""SELECT task_id, task_type, model, duration_seconds, status,
                       to_char(created_at AT TIME ZONE 'UTC',
                               'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'),
                       {', '.join(OPTIONAL_RECORD_FIELDS)}
                FROM metric_records ORDER BY seq""").fetchall()
    names = (*RECORD_FIELDS, *OPTIONAL_RECORD_FIELDS)
    return [{name: value for name, value in zip(names, row) if value is not None}
            for row in rows]
