"""``flask store copy``: the JSONL stores of a folder into a PostgreSQL database, the way
from one machine to many."""
from __future__ import annotations

from pathlib import Path

from app import config
from app.storage.jsonl import JsonlMetricStore, JsonlTaskStore
from app.storage.metric_records import as_stored
from app.storage.postgres.copy import CopyCounts, copy_into
from app.storage.postgres.database import PostgresDatabase


def copy_stores(source: Path, database: PostgresDatabase) -> CopyCounts:
    """Copy the stores found in the folder ``source`` (each may be missing)."""
    metrics = JsonlMetricStore(config.metrics_path(source), fsync=False)
    tasks = JsonlTaskStore(config.tasks_path(source), metrics=metrics, fsync=False)
    return copy_into(database, map(as_stored, metrics.records()), metrics.log.carried(),
                     tasks.states(), tasks.read_log)
