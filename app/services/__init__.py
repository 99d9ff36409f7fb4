"""Services hold the rules; each app keeps one set of them in ``app.extensions``."""
from __future__ import annotations

from dataclasses import dataclass

from app.services.metrics_service import MetricsService
from app.services.task_service import TaskService


@dataclass(frozen=True)
class Services:
    tasks: TaskService
    metrics: MetricsService

    def warm_up(self) -> None:
        """Read both stores now, then close their files.

        Run in the gunicorn master before it forks (see gunicorn.conf.py): every worker
        then starts with the stores read and only reads what was appended since, and no
        worker shares an open file with another.
        """
        try:
            self.tasks.counts_by_status()
            self.metrics.get_aggregates()
        finally:
            for service in (self.tasks, self.metrics):
                service.close_files()

    def stores(self) -> dict[str, tuple[str, bool]]:
        """Where each store is and whether it can be written now."""
        return {
            name: (service.store.location, service.store.writable())
            for name, service in (("tasks", self.tasks), ("metrics", self.metrics))
        }
