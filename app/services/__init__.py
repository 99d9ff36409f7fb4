"""Services hold the rules; each app keeps one set of them in ``app.extensions``."""
from __future__ import annotations

from dataclasses import dataclass

from app.services.metrics_service import MetricsService
from app.services.task_service import TaskService


@dataclass(frozen=True)
class Services:
    tasks: TaskService
    metrics: MetricsService
