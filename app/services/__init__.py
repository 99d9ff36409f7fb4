"""Services hold the rules; each app keeps one set of them in ``app.extensions``."""
from __future__ import annotations

from dataclasses import dataclass

from app.services.metrics_service import MetricsService
from app.services.task_service import TaskService


@dataclass(frozen=True)
class Services:
    tasks: TaskService
    metrics: MetricsService

    def stores(self) -> dict[str, tuple[str, bool]]:
        """Each store's file and whether it can be written now."""
        return {
            name: (str(service.log.path), service.log.writable())
            for name, service in (("tasks", self.tasks), ("metrics", self.metrics))
        }
