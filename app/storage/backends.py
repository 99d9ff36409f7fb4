"""Which backend holds the stores: PostgreSQL when ``AGENT_DATABASE_URL`` is set, else
the JSONL files in ``AGENT_LOGS_DIR``."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app import config
from app.storage.jsonl import JsonlMetricStore, JsonlTaskStore
from app.storage.stores import MetricStore, TaskStore


def open_stores(settings: Mapping[str, Any]) -> tuple[TaskStore, MetricStore]:
    """The task store and the metric store the settings name. Nothing is read or
    connected to until first used."""
    url = settings.get("AGENT_DATABASE_URL")
    if url:
        from app.storage.postgres import PostgresDatabase, PostgresMetricStore, PostgresTaskStore
        from app.storage.postgres.timeouts import Timeouts

        database = PostgresDatabase(url, pool_size=settings["AGENT_DATABASE_POOL_SIZE"],
                                    timeouts=Timeouts.from_settings(settings))
        return PostgresTaskStore(database), PostgresMetricStore(database)
    logs_dir, fsync = settings["AGENT_LOGS_DIR"], settings["AGENT_FSYNC"]
    metrics = JsonlMetricStore(config.metrics_path(logs_dir), fsync=fsync)
    return JsonlTaskStore(config.tasks_path(logs_dir), metrics=metrics, fsync=fsync), metrics


def location_key(settings: Mapping[str, Any]) -> str:
    """One key per set of stores the settings name."""
    return settings.get("AGENT_DATABASE_URL") or str(
        config.metrics_path(settings["AGENT_LOGS_DIR"]).resolve())
